"""Slow clients against the API: a bounded slowloris while `/healthz` and a submit are timed.

A handful of sockets each send a request one byte every few seconds, never finishing it (a socket the
server drops is replaced by a new one), while a
prober asks ``GET /healthz`` and submits a job (``POST /api/v1/transcribe/async/submit``) in turn,
one probe a second. Served by sync workers, each slow socket held a whole gunicorn process (and
two of them the whole API); the API now serves with gevent workers, where a slow socket costs a
greenlet and is dropped when its request line and headers take longer than the keep-alive
timeout (``app/gunicorn_conf.py``).

``python -m bench.slowloris [--seconds 60]`` starts Redis and the API and prints the probe
latencies as JSON; ``tests/test_slow_clients.py`` runs a shorter attack and asserts on the same figures.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

#: A request that never ends: its headers arrive one byte at a time.
_REQUEST = b"POST /api/v1/transcribe/async/submit HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 4096


@dataclass
class Probe:
    path: str
    seconds: float | None  # None: no answer within the probe's timeout
    status: int | None


@dataclass
class Attack:
    """What a slowloris run measured."""

    sockets: int
    interval: float
    seconds: float
    bytes_sent: int = 0
    sockets_closed_by_server: int = 0
    probes: list[Probe] = field(default_factory=list)

    def latencies(self, path: str) -> list[float]:
        # A probe with no answer counts as the probe's whole timeout: it is the figure that matters.
        return [p.seconds if p.seconds is not None else float("inf") for p in self.probes if p.path == path]

    def summary(self) -> dict:
        def figures(values: list[float]) -> dict:
            finite = [v for v in values if v != float("inf")]
            return {"probes": len(values), "unanswered": len(values) - len(finite),
                    "p50_ms": round(statistics.median(values) * 1000, 1) if finite else None,
                    "max_ms": round(max(values) * 1000, 1) if finite and len(finite) == len(values) else None,
                    "over_1s": sum(v >= 1.0 for v in values)}

        return {"sockets": self.sockets, "byte_every_s": self.interval, "seconds": self.seconds,
                "bytes_sent": self.bytes_sent, "sockets_closed_by_server": self.sockets_closed_by_server,
                "healthz": figures(self.latencies("/healthz")),
                "submit": figures(self.latencies("/api/v1/transcribe/async/submit"))}


def attack(base_url: str, api_key: str, *, sockets: int = 6, interval: float = 3.0,
           seconds: float = 60.0, probe_timeout: float = 5.0) -> Attack:
    """Hold ``sockets`` slow requests open against ``base_url`` for ``seconds`` while probing it."""
    host, port = base_url.removeprefix("http://").split(":")
    result = Attack(sockets=sockets, interval=interval, seconds=seconds)
    stop = threading.Event()
    lock = threading.Lock()

    def slow_client() -> None:
        """One slow socket for the whole attack: when the server drops it, open another (as slowloris does)."""
        while not stop.is_set():
            sent = 0
            try:
                with socket.create_connection((host, int(port)), timeout=10) as conn:
                    while not stop.is_set() and sent < len(_REQUEST):
                        conn.sendall(_REQUEST[sent:sent + 1])
                        sent += 1
                        stop.wait(interval)
            except OSError:
                with lock:
                    result.sockets_closed_by_server += 1
            with lock:
                result.bytes_sent += sent

    clients = [threading.Thread(target=slow_client, daemon=True) for _ in range(sockets)]
    for client in clients:
        client.start()
    time.sleep(min(2 * interval, 5.0))  # the attack is under way: each socket has sent its first bytes
    deadline = time.monotonic() + seconds
    submit = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        result.probes.append(_probe(base_url, "/healthz", None, None, probe_timeout))
        submit += 1
        result.probes.append(_probe(base_url, "/api/v1/transcribe/async/submit", api_key,
                                    {"youtube_url": f"https://www.youtube.com/watch?v={submit:011d}"}, probe_timeout))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # pacing, not synchronisation
    stop.set()
    for client in clients:
        client.join(timeout=interval + 10)
    return result


def _probe(base_url: str, path: str, api_key: str | None, body: dict | None, timeout: float) -> Probe:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method="POST" if data else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError):
        return Probe(path, None, None)
    return Probe(path, time.monotonic() - started, status)


def main() -> None:
    from bench.harness import Harness

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=6)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between two bytes of a slow socket")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with Harness() as harness:
        harness.start_redis()
        result = attack(harness.api(), harness.api_key(), sockets=args.sockets,
                        interval=args.interval, seconds=args.seconds)
    print(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
