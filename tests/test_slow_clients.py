"""Slow clients cannot starve the API (issue 12): gunicorn served as in production
(``app.gunicorn_conf``, two processes) and clients on raw sockets."""

import json
import socket
import time

from app.core.redis_server import free_port
from app.request_body import STALL_TIMEOUT
from bench.slowloris import attack
from tests.helpers import start_api, stop_process


def test_a_handful_of_slow_sockets_do_not_delay_healthz_or_a_submit(config, services):
    user, key = services.users.create("slow@example.com", "enterprise", quota=1000)
    port = free_port()
    api = start_api(port)
    try:
        # More slow sockets than the API has processes; one byte every 2 s, for 30 s.
        result = attack(f"http://127.0.0.1:{port}", key, sockets=6, interval=2.0, seconds=30)
    finally:
        stop_process(api)
    summary = result.summary()
    print("slowloris:", summary)
    assert summary["bytes_sent"] >= 6 * 2, "the slow sockets sent nothing"
    # The API drops a socket whose headers take too long (the attacker then opens another).
    assert summary["sockets_closed_by_server"] >= 6, summary
    for path in ("healthz", "submit"):
        assert summary[path]["unanswered"] == 0, summary
        assert summary[path]["over_1s"] == 0, summary
        assert summary[path]["probes"] >= 10, summary
    statuses = {probe.status for probe in result.probes}
    assert statuses <= {200, 202}, statuses


def test_a_body_shorter_than_its_content_length_is_a_400_within_seconds(config, services):
    user, key = services.users.create("short@example.com", "enterprise", quota=10)
    port = free_port()
    api = start_api(port)
    try:
        body = b'{"youtube_url": '  # of the 100 bytes announced
        request = (f"POST /api/v1/transcribe/async/submit HTTP/1.1\r\nHost: localhost\r\n"
                   f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: 100\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            started = time.monotonic()
            conn.sendall(request)  # and then nothing, the connection left open
            answer = b""
            while chunk := conn.recv(65536):  # the server closes the connection after its answer
                answer += chunk
            elapsed = time.monotonic() - started
    finally:
        stop_process(api)
    head, _, payload = answer.partition(b"\r\n\r\n")
    print(f"incomplete body answered in {elapsed:.2f} s: {head.splitlines()[:1]}")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(payload)["error"] == "incomplete_body"
    assert STALL_TIMEOUT <= elapsed < STALL_TIMEOUT + 10
    assert services.queues["express"].count == 0
