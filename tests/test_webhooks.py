"""Signed webhooks, received by a real receiver on loopback that verifies every request with the
``standardwebhooks`` library: delivered once a job ends (retried on 5xx until the receiver takes it,
not retried on another 4xx), refused redirects never followed, a batch's event once all its videos
ended, and a rotated secret that signs the next delivery."""

from __future__ import annotations

import http.server
import io
import json
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
import urllib3
from rq import Queue
from rq.job import Job
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.core import stats, webhooks
from app.core.errors import HostNotAllowed, InvalidURL
from app.core.redis_server import free_port
from app.core.settings import Settings
from app.core.urls import check_callback_url
from tests.helpers import start_worker, status, stop_process, submit, wait_for, ytcaption_command
from tests.test_egress import Listener
from workers import context
from workers import webhooks as deliveries
from workers.worker import build_worker

#: Generous: the suite runs on a busy 2-core machine.
DEADLINE = 90


# --- a receiver on loopback -----------------------------------------------------------------------


@dataclass
class Received:
    at: float  # time.time() when the request came
    path: str
    event_id: str | None
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    """Verifies each POST with ``server.secret``; answers what ``server.plan[path]`` says next (a status, or
    ``(status, Location)``), then 200. A request that does not verify gets 401."""

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name: value for name, value in self.headers.items()}
        try:
            Webhook(self.server.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self.server.lock:
            plan = self.server.plan.get(self.path, [])
            step = plan.pop(0) if plan and verified else (200 if verified else 401)
        answer, location = step if isinstance(step, tuple) else (step, None)
        self.server.received.append(Received(time.time(), self.path, self.headers.get("webhook-id"), headers, body,
                                              verified, answer))
        self.send_response(answer)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Receiver:
    httpd: http.server.ThreadingHTTPServer
    plan: dict = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def secret(self) -> str:
        return self.httpd.secret

    @secret.setter
    def secret(self, value: str) -> None:
        self.httpd.secret = value

    def at(self, path: str) -> list[Received]:
        return [request for request in list(self.httpd.received) if request.path == path]


@pytest.fixture
def receiver():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReceiverHandler)
    httpd.daemon_threads = True
    httpd.secret, httpd.plan, httpd.received, httpd.lock = webhooks.new_secret(), {}, [], threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    receiver = Receiver(httpd)
    receiver.plan = httpd.plan
    yield receiver
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(make_client, receiver):
    """The API, and the environment of the workers a test starts: the receiver's port allowed, retries 1 s apart."""
    return make_client(WEBHOOK_ALLOWED_HOSTS=f"127.0.0.1:{receiver.port}", WEBHOOK_RETRY_BASE="1")


@pytest.fixture
def user(client, receiver, redis):
    """A user whose signing secret the receiver verifies with; ``(user, headers)``."""
    services = client.application.extensions["ytcaption"]
    account, key = services.users.create(f"hooks-{time.monotonic_ns()}@example.com", "free")
    receiver.secret = webhooks.rotate_secret(redis, account.id)
    return account, {"Authorization": f"Bearer {key}"}


def deliver_waiting(redis) -> None:
    """Run ytcaption's worker in this process until the webhooks queue is empty (no model: deliveries need none)."""
    settings = Settings.load()
    context.use(settings)
    try:
        build_worker(redis, settings, []).work(burst=True, logging_level="WARNING")
    finally:
        context.use(None)


def no_delivery_left(redis) -> bool:
    """Nothing queued, running or waiting for a retry on the webhooks queue: no request can come any more."""
    queue = Queue(webhooks.WEBHOOK_QUEUE, connection=redis)
    return queue.count == 0 and queue.scheduled_job_registry.count == 0 and queue.started_job_registry.count == 0


def webhook_of(client, headers, job_id: str) -> dict:
    return status(client, headers, job_id).get("webhook") or {}


# --- the URL policy and the schedule ----------------------------------------------------------------


@pytest.mark.parametrize("url, error", [
    ("http://10.0.0.7/hook", HostNotAllowed),
    ("http://169.254.169.254/latest/meta-data/", HostNotAllowed),
    ("http://[::1]/hook", HostNotAllowed),
    ("http://localhost/hook", HostNotAllowed),  # resolves to loopback
    ("http://hooks.example.com:8080/hook", HostNotAllowed),  # public, but not its default port
    ("http://127.0.0.1:9/hook", HostNotAllowed),  # listed, on another port
    ("ftp://hooks.example.com/hook", InvalidURL),
    ("https://user:password@hooks.example.com/hook", InvalidURL),
    ("https://no-such-host.invalid/hook", InvalidURL),
])
def test_a_callback_url_is_refused_on_internal_hosts_odd_ports_and_bad_urls(url, error):
    public = {"hooks.example.com": ["93.184.215.14"], "localhost": ["127.0.0.1", "::1"]}

    def resolve(host):
        if host in public:
            return public[host]
        if host.endswith(".invalid"):
            raise OSError("no such host")
        return [host]

    with pytest.raises(error):
        check_callback_url(url, ["127.0.0.1:8123"], resolve=resolve)


def test_a_callback_url_on_a_public_host_gives_the_addresses_to_connect_to_and_a_listed_host_none():
    def resolve(host):
        return {"hooks.example.com": ["2606:2800:21f:cb07::1", "93.184.215.14"]}[host]

    assert check_callback_url("https://hooks.example.com/in?x=1", resolve=resolve) == [
        "2606:2800:21f:cb07::1", "93.184.215.14"]
    assert check_callback_url("http://receiver.internal:8123/in", ["receiver.internal:8123"], resolve=resolve) is None


def test_the_retry_schedule_covers_a_day_at_its_least_with_capped_exponential_delays():
    least = webhooks.retry_delays(10, 3600, rand=lambda: 0.0)
    most = webhooks.retry_delays(10, 3600, rand=lambda: 1.0)
    assert len(least) == len(most) == 56
    assert sum(least) >= 86_400 > sum(least[:-1])
    assert least[:4] == [5.0, 10.0, 20.0, 40.0] and most[:4] == [10.0, 20.0, 40.0, 80.0]
    assert max(most) == 3600 and max(least) == 1800
    print(f"webhook retries: {len(least)}, over {sum(least) / 3600:.1f} to {sum(most) / 3600:.1f} hours")


@pytest.mark.parametrize("answer, retried", [(500, True), (503, True), (429, True), (408, True), (404, False),
                                            (401, False), (410, False), (304, False)])
def test_which_answers_are_retried(receiver, answer, retried):
    receiver.plan["/classify"] = [answer]
    moment = datetime.now(timezone.utc)
    headers = {"webhook-id": "evt_x", "webhook-timestamp": str(int(moment.timestamp())),
               "webhook-signature": Webhook(receiver.secret).sign("evt_x", moment, "{}")}
    outcome = deliveries._attempt(receiver.url("/classify"), b"{}", headers, (f"127.0.0.1:{receiver.port}",))
    assert (outcome.status, outcome.permanent, outcome.error) == (answer, not retried, f"HTTP {answer}")


def test_a_timeout_a_refused_connection_and_a_hang_up_are_retried(monkeypatch):
    monkeypatch.setattr(webhooks, "HOP_TIMEOUT", 0.5)
    silent = socket.socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    hanging_up = Listener()  # accepts and closes at once
    try:
        for port, error in [(silent.getsockname()[1], "no answer within 0.5 s"),
                            (free_port(), "connection failed: "),
                            (hanging_up.port, "connection broken: ")]:
            outcome = deliveries._attempt(f"http://127.0.0.1:{port}/", b"{}", {}, (f"127.0.0.1:{port}",))
            assert outcome.status is None and not outcome.permanent and outcome.error.startswith(error), outcome
    finally:
        silent.close()
        hanging_up.close()


def self_signed(name: str, directory) -> tuple[str, str]:
    """A certificate for ``name`` (its own CA) and its key, as PEM files."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_https_goes_to_the_checked_address_and_still_verifies_the_hosts_name(tmp_path, monkeypatch, receiver):
    """The request is sent to the address the policy checked, never resolved again; TLS still sends the
    host's name (SNI) and checks the certificate against it, and ``Host`` names it."""
    cert, key = self_signed("hooks.example.com", tmp_path)
    context_ = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context_.load_cert_chain(cert, key)
    names = []
    context_.sni_callback = lambda sock, name, ctx: names.append(name)
    receiver.httpd.socket = context_.wrap_socket(receiver.httpd.socket, server_side=True)
    monkeypatch.setattr(deliveries.certifi, "where", lambda: cert)  # the receiver's CA, trusted for this test
    moment = datetime.now(timezone.utc)
    headers = {"webhook-id": "evt_tls", "webhook-timestamp": str(int(moment.timestamp())),
               "webhook-signature": Webhook(receiver.secret).sign("evt_tls", moment, "{}")}

    url = f"https://hooks.example.com:{receiver.port}/tls"
    assert deliveries._post(url, ["127.0.0.1"], b"{}", headers) == (200, None)
    (request,) = receiver.at("/tls")
    assert request.verified and request.headers["Host"] == f"hooks.example.com:{receiver.port}"
    assert names == ["hooks.example.com"]
    # A certificate that does not name the host is refused (an error the attempt's caller retries).
    with pytest.raises(urllib3.exceptions.SSLError, match="doesn't match 'hooks.example.com'"):
        deliveries._post(f"https://other.example.com:{receiver.port}/tls", ["127.0.0.1"], b"{}", headers)
    assert len(receiver.at("/tls")) == 1


# --- submit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("callback_url, code", [
    ("http://10.1.2.3/hook", "host_not_allowed"),
    ("http://127.0.0.1:1/hook", "host_not_allowed"),
    ("http://169.254.169.254/", "host_not_allowed"),
    ("gopher://hooks.example.com/", "invalid_url"),
])
def test_a_submit_with_an_internal_callback_url_is_refused_with_a_json_error(client, user, media_server,
                                                                               callback_url, code):
    _, headers = user
    answers = [
        submit(client, headers, media_server.url("fox.m4a"), callback_url=callback_url),
        client.post("/api/v1/transcribe/async/batch", headers=headers, json={
            "videos": [{"youtube_url": media_server.url("fox.m4a")}], "callback_url": callback_url}),
        client.post("/api/v1/transcribe/async/submit", headers=headers, content_type="multipart/form-data",
                    data={"file": (io.BytesIO((media_server.directory / "fox.m4a").read_bytes()), "fox.m4a"),
                          "callback_url": callback_url}),
    ]
    for answer in answers:
        assert answer.status_code == 400 and answer.get_json()["error"] == code, answer.get_json()
        assert "callback" in answer.get_json()["message"]
    assert Queue("standard", connection=client.application.extensions["ytcaption"].redis).count == 0


def test_the_same_idempotency_key_with_another_callback_url_is_refused(client, user, receiver, media_server):
    _, headers = user
    keyed = {**headers, "Idempotency-Key": "hook-1"}
    first = submit(client, keyed, media_server.url("fox.m4a"), callback_url=receiver.url("/a"))
    assert first.status_code == 202
    assert submit(client, keyed, media_server.url("fox.m4a"), callback_url=receiver.url("/a")).get_json()[
        "job_id"] == first.get_json()["job_id"]
    again = submit(client, keyed, media_server.url("fox.m4a"), callback_url=receiver.url("/b"))
    assert again.status_code == 422 and again.get_json()["error"] == "idempotency_key_reused"


# --- deliveries -----------------------------------------------------------------------------------------


def test_a_completed_job_is_delivered_once_after_two_failures_each_attempt_in_its_status(
        client, user, receiver, redis, media_server):
    account, headers = user
    receiver.plan["/hooks/flaky"] = [500, 503]
    job_id = submit(client, headers, media_server.url("fox.m4a"),
                    callback_url=receiver.url("/hooks/flaky")).get_json()["job_id"]
    pending = webhook_of(client, headers, job_id)
    assert pending == {"url": receiver.url("/hooks/flaky"), "event_id": None, "state": "pending", "attempts": []}
    worker = start_worker(redis)
    try:
        wait_for(lambda: webhook_of(client, headers, job_id).get("state") == "delivered", timeout=DEADLINE,
                 interval=0.2, message="the webhook to be delivered")
        wait_for(lambda: no_delivery_left(redis), timeout=DEADLINE, message="the delivery job to end")
    finally:
        stop_process(worker)

    answer = status(client, headers, job_id)
    hook = answer["webhook"]
    assert hook["event_id"] == f"evt_{job_id}_completed"
    assert [a["status"] for a in hook["attempts"]] == [500, 503, 200]
    assert [a["error"] for a in hook["attempts"]] == ["HTTP 500", "HTTP 503", None]
    assert all(a["latency_ms"] >= 0 and a["url"] is None for a in hook["attempts"])
    times = [datetime.fromisoformat(a["at"]) for a in hook["attempts"]]
    assert times == sorted(times)
    # The delivery's retry schedule, as RQ keeps it: 0.5-1 s, then 1-2 s, ... (RQ's scheduler rounds each
    # time down to its second, so the gaps seen may be up to 1 s shorter: the schedule is what is checked).
    [delivery_id] = Queue(webhooks.WEBHOOK_QUEUE, connection=redis).finished_job_registry.get_job_ids()
    intervals = Job.fetch(delivery_id, connection=redis).retry_intervals
    assert 0.5 <= intervals[0] <= 1 and 1 <= intervals[1] <= 2 and 2 <= intervals[2] <= 4, intervals[:3]

    requests = receiver.at("/hooks/flaky")
    assert [r.answered for r in requests] == [500, 503, 200] and all(r.verified for r in requests)
    accepted = Counter(r.event_id for r in requests if r.answered == 200)
    assert accepted == {f"evt_{job_id}_completed": 1}  # once, and nothing after: no delivery is left to come
    stamps = [int(r.headers["webhook-timestamp"]) for r in requests]
    assert stamps == sorted(stamps) and stamps[2] > stamps[0]  # each attempt signed anew, at its own time
    event = requests[-1].event
    assert event["type"] == "job.completed" and event["timestamp"].endswith("Z")
    assert event["data"]["job_id"] == job_id and event["data"]["status"] == "completed"
    assert event["data"]["result"] == answer["result"] and event["data"]["youtube_url"] == media_server.url("fox.m4a")
    assert requests[0].headers["Content-Type"] == "application/json"

    latency = requests[0].at - datetime.fromisoformat(answer["ended_at"]).timestamp()
    print(f"webhook: first request {latency * 1000:.0f} ms after the job's end; "
          f"delivered {requests[-1].at - requests[0].at:.1f} s after it, at the third attempt")
    assert redis.hgetall(stats.WEBHOOKS) == {b"retried": b"2", b"delivered": b"1"}
    # The secret is in no job record and no answer.
    secret = receiver.secret.encode()
    assert all(secret not in value for key in redis.scan_iter("rq:job:*") for value in redis.hvals(key))
    assert receiver.secret not in json.dumps(answer)


def test_a_4xx_answer_is_not_retried(client, user, receiver, redis, media_server):
    _, headers = user
    receiver.plan["/hooks/gone"] = [410]
    job_id = submit(client, headers, media_server.url("fox.m4a"),
                    callback_url=receiver.url("/hooks/gone")).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    deliver_waiting(redis)

    hook = webhook_of(client, headers, job_id)
    assert hook["state"] == "failed" and hook["event_id"] == f"evt_{job_id}_cancelled"
    assert [(a["status"], a["error"]) for a in hook["attempts"]] == [(410, "HTTP 410")]
    assert no_delivery_left(redis)
    assert Queue(webhooks.WEBHOOK_QUEUE, connection=redis).failed_job_registry.count == 1
    assert [r.answered for r in receiver.at("/hooks/gone")] == [410]
    assert redis.hgetall(stats.WEBHOOKS) == {b"failed": b"1"}


@pytest.mark.parametrize("where", ["metadata", "loopback port"])
def test_a_redirect_to_an_internal_address_is_refused_and_never_requested(client, user, receiver, redis,
                                                                           media_server, where):
    _, headers = user
    trap = Listener()
    target = "http://169.254.169.254/latest/meta-data/" if where == "metadata" else f"http://127.0.0.1:{trap.port}/"
    receiver.plan["/hooks/moved"] = [(302, "/hooks/moved-again")]
    receiver.plan["/hooks/moved-again"] = [(307, target)]
    try:
        job_id = submit(client, headers, media_server.url("fox.m4a"),
                        callback_url=receiver.url("/hooks/moved")).get_json()["job_id"]
        assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
        deliver_waiting(redis)
    finally:
        trap.close()

    hook = webhook_of(client, headers, job_id)
    assert hook["state"] == "failed"
    (attempt,) = hook["attempts"]
    assert attempt["status"] == 307 and attempt["url"] == target
    assert attempt["error"].startswith(f"redirect to {target} refused: ")
    assert trap.connections == 0
    # Each hop got the same signed POST; the refused one was not requested.
    hops = receiver.at("/hooks/moved") + receiver.at("/hooks/moved-again")
    assert [r.answered for r in hops] == [302, 307] and all(r.verified for r in hops)
    assert hops[0].body == hops[1].body


def test_a_job_cancelled_while_queued_sends_job_cancelled(client, user, receiver, redis, media_server):
    _, headers = user
    job_id = submit(client, headers, media_server.url("fox.m4a"),
                    callback_url=receiver.url("/hooks/cancelled")).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    assert webhook_of(client, headers, job_id)["state"] == "pending"
    deliver_waiting(redis)

    (request,) = receiver.at("/hooks/cancelled")
    assert request.verified and request.answered == 200
    assert request.event["type"] == "job.cancelled"
    assert request.event["data"] == {"job_id": job_id, "status": "cancelled",
                                     "youtube_url": media_server.url("fox.m4a"), "video_id": None}
    assert webhook_of(client, headers, job_id)["state"] == "delivered"


def test_a_job_that_failed_for_good_sends_job_failed_with_its_error(client, user, receiver, redis, media_server,
                                                                    run_worker):
    _, headers = user
    job_id = submit(client, headers, media_server.url("no-such-file.m4a"),
                    callback_url=receiver.url("/hooks/failed")).get_json()["job_id"]
    run_worker(("standard",))  # the job, then its webhook: the same worker, the webhooks queue first

    answer = status(client, headers, job_id)
    assert answer["status"] == "failed" and answer["webhook"]["state"] == "delivered"
    (request,) = receiver.at("/hooks/failed")
    assert request.verified and request.event["type"] == "job.failed"
    assert request.event["data"]["error"] == answer["error"] and answer["error"]["type"] == "video_unavailable"


def test_a_batch_sends_one_batch_ended_once_all_its_videos_ended(client, user, receiver, redis, media_server):
    _, headers = user
    answer = client.post("/api/v1/transcribe/async/batch", headers=headers, json={
        "videos": [{"youtube_url": media_server.url("fox.m4a"), "callback_url": receiver.url("/hooks/video")},
                   {"youtube_url": media_server.url("fox.m4a")}],
        "callback_url": receiver.url("/hooks/batch")})
    assert answer.status_code == 202, answer.get_json()
    batch_id, job_ids = answer.get_json()["batch_id"], answer.get_json()["job_ids"]
    # The second video is cancelled while it waits: the batch has not ended yet.
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_ids[1]}", headers=headers).status_code == 200
    deliver_waiting(redis)
    assert receiver.at("/hooks/batch") == []

    worker = start_worker(redis)
    try:
        wait_for(lambda: receiver.at("/hooks/batch") and no_delivery_left(redis), timeout=DEADLINE, interval=0.2,
                 message="the batch's webhook")
    finally:
        stop_process(worker)
    (ended,) = receiver.at("/hooks/batch")
    assert ended.verified and ended.event_id == f"evt_{batch_id}_ended"
    assert ended.event["type"] == "batch.ended"
    assert ended.event["data"] == {"batch_id": batch_id, "total": 2, "completed": 1, "failed": 0, "cancelled": 1,
                                   "job_ids": job_ids}
    (video,) = receiver.at("/hooks/video")
    assert video.event["type"] == "job.completed" and video.event["data"]["batch_id"] == batch_id
    batch = client.get(f"/api/v1/transcribe/async/batch/{batch_id}", headers=headers).get_json()
    assert batch["webhook"]["state"] == "delivered" and batch["webhook"]["url"] == receiver.url("/hooks/batch")
    assert [v.get("webhook", {}).get("state") for v in batch["videos"]] == ["delivered", None]


def test_two_videos_of_a_batch_ending_at_once_send_one_batch_event(client, user, receiver, redis, media_server):
    """The last two ends of 20 batches, each pair in two threads released together: one event per batch."""
    _, headers = user
    for _ in range(20):
        answer = client.post("/api/v1/transcribe/async/batch", headers=headers, json={
            "videos": [{"youtube_url": media_server.url("fox.m4a")}] * 2, "callback_url": receiver.url("/b")})
        jobs = Job.fetch_many(answer.get_json()["job_ids"], connection=redis)
        barrier = threading.Barrier(2)

        def end(job):
            barrier.wait()
            webhooks.job_ended(redis, job, "completed", {})

        threads = [threading.Thread(target=end, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    deliveries = Queue(webhooks.WEBHOOK_QUEUE, connection=redis).get_jobs()
    assert len(deliveries) == 20
    assert len({job.kwargs["event_id"] for job in deliveries}) == 20


def test_a_rotated_secret_is_printed_last_and_signs_the_next_delivery(client, user, receiver, redis, media_server):
    account, headers = user
    old = receiver.secret
    result = subprocess.run([ytcaption_command(), "users", "webhook-secret", account.email], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    new = result.stdout.splitlines()[-1]
    assert new.startswith("whsec_") and new != old and old not in result.stdout
    receiver.secret = new

    job_id = submit(client, headers, media_server.url("fox.m4a"),
                    callback_url=receiver.url("/hooks/rotated")).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    deliver_waiting(redis)
    (request,) = receiver.at("/hooks/rotated")
    assert request.verified and request.answered == 200
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_a_user_without_a_secret_gets_one_and_no_delivery_goes_unsigned(client, receiver, redis, media_server):
    services = client.application.extensions["ytcaption"]
    account, key = services.users.create("no-secret@example.com", "free")
    headers = {"Authorization": f"Bearer {key}"}
    job_id = submit(client, headers, media_server.url("fox.m4a"),
                    callback_url=receiver.url("/hooks/unsigned")).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    deliver_waiting(redis)
    (request,) = receiver.at("/hooks/unsigned")
    # Signed with a secret made for the user, which only the CLI shows (rotating it): not the receiver's.
    assert request.headers["webhook-signature"].startswith("v1,") and not request.verified
    made = redis.get(f"ytcaption:webhook-secret:{account.id}").decode()
    assert Webhook(made).verify(request.body, request.headers)["data"]["job_id"] == job_id


def test_the_metrics_count_deliveries_by_outcome(config, redis):
    """/metrics serves the counters the deliveries write."""
    from app import create_app

    redis.hset(stats.WEBHOOKS, mapping={"delivered": 3, "retried": 2})
    client = create_app({**config, "METRICS_PUBLIC": "true"}).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ytcaption_webhook_deliveries_total{outcome="delivered"} 3.0' in text
    assert 'ytcaption_webhook_deliveries_total{outcome="retried"} 2.0' in text
    assert 'ytcaption_webhook_deliveries_total{outcome="failed"} 0.0' in text
    assert 'ytcaption_queue_length{queue="webhooks"} 0.0' in text



def test_each_job_sharing_work_and_a_cache_hit_sends_its_own_event(client, user, receiver, redis, media_server):
    """Two identical uploads share one job (app.core.sharing); a third, after, is answered from the cache.
    Each has its own event, naming its own job and transcript."""
    _, headers = user
    audio = (media_server.directory / "fox.m4a").read_bytes()

    def upload(path: str):
        return client.post("/api/v1/transcribe/async/submit", headers=headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(audio), "fox.m4a"), "callback_url": receiver.url(path)})

    shared = [upload(path) for path in ("/hooks/leader", "/hooks/follower")]
    assert [answer.status_code for answer in shared] == [202, 202]
    job_ids = {path: answer.get_json()["job_id"] for path, answer in zip(("/hooks/leader", "/hooks/follower"), shared)}
    assert Queue("standard", connection=redis).count == 1
    worker = start_worker(redis)
    try:
        wait_for(lambda: all(webhook_of(client, headers, job_id).get("state") == "delivered"
                             for job_id in job_ids.values()), timeout=DEADLINE, interval=0.2,
                 message="both webhooks to be delivered")
        cached = upload("/hooks/cached")
        assert cached.status_code == 200 and cached.get_json()["cached"] is True
        job_ids["/hooks/cached"] = cached.get_json()["job_id"]
        wait_for(lambda: receiver.at("/hooks/cached"), timeout=DEADLINE, interval=0.2, message="the cache hit's event")
    finally:
        stop_process(worker)
    for path, job_id in job_ids.items():
        [request] = receiver.at(path)
        assert request.verified and request.event_id == f"evt_{job_id}_completed"
        assert request.event["type"] == "job.completed"
        data = request.event["data"]
        assert data["job_id"] == job_id and data["result"]["transcription_id"] == job_id
