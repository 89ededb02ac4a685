"""The HTTP API through Flask's test client, against the real Redis."""

import http.client
import json

import pytest
from rq.job import Job

from app import create_app
from app.api import MAX_BODY_BYTES
from app.core.redis_server import free_port
from tests.helpers import start_api, status, stop_process, submit

YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_redis_down_gives_503_with_retry_after_and_healthz_stays_up(config, services, make_user):
    _, headers = make_user("free")
    app = create_app({**config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["error"] == "service_unavailable"
    response = submit(client, headers, YOUTUBE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "service_unavailable"


@pytest.mark.parametrize("cache, trips", [(True, 4), (False, 3)])
def test_a_submit_takes_four_redis_round_trips_three_without_the_cache(client, make_user, monkeypatch, cache, trips):
    """Key + user + rate count (one script), the result cache's entry (unless ``cache: false``), quota charge
    (one script), enqueue + sharing + metrics (one pipeline)."""
    import redis.connection

    _, headers = make_user("pro")
    assert submit(client, headers, YOUTUBE, cache=cache).status_code == 202  # loads the scripts once
    sent = []
    original = redis.connection.Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    response = submit(client, headers, YOUTUBE, cache=cache)
    assert response.status_code == 202
    assert len(sent) == trips
    assert response.headers["X-RateLimit-Remaining"] == str(int(response.headers["X-RateLimit-Limit"]) - 2)


def test_submit_answers_202_with_job_id_and_status_url(client, make_user, redis):
    user, headers = make_user("free")
    response = submit(client, headers, "https://youtu.be/dQw4w9WgXcQ?t=3", language="en")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "accepted" and body["queue"] == "standard"
    assert body["status_url"] == f"/api/v1/transcribe/async/status/{body['job_id']}"
    assert response.headers["Location"] == body["status_url"]
    job = Job.fetch(body["job_id"], connection=redis)
    assert job.func_name == "workers.jobs.transcribe_video"
    assert job.kwargs == {"url": YOUTUBE, "video_id": "dQw4w9WgXcQ", "language": "en",
                          "model": "tiny.en", "source": "whisper", "user_id": user.id, "max_duration": 3600}


@pytest.mark.parametrize("tier, queue", [("free", "standard"), ("pro", "express"), ("enterprise", "express")])
def test_tier_picks_the_queue(client, make_user, services, tier, queue):
    _, headers = make_user(tier)
    body = submit(client, headers, YOUTUBE).get_json()
    assert body["queue"] == queue
    assert services.queues[queue].job_ids == [body["job_id"]]


def test_the_api_key_is_not_stored_with_the_job(client, make_user, redis):
    _, headers = make_user("pro")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    api_key = headers["Authorization"].split()[1].encode()
    for key in redis.scan_iter():
        assert api_key not in (redis.dump(key) or b"")
    job = Job.fetch(job_id, connection=redis)  # job data is stored compressed: look inside too
    assert api_key not in job.data and api_key.decode() not in repr(job.meta)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer ytc_not-a-real-key"},
])
def test_missing_or_invalid_key_gives_401(client, headers):
    for response in (
        submit(client, headers, YOUTUBE),
        client.get("/api/v1/transcribe/async/status/abc", headers=headers),
        client.delete("/api/v1/transcribe/async/cancel/abc", headers=headers),
        client.get("/api/v1/transcriptions/abc", headers=headers),
    ):
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("body, code", [
    ("{not json", "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('"just a string"', "invalid_json"),
    ("[" * 20_000 + "]" * 20_000, "invalid_json"),  # nested too deeply for Python's parser: was a 500
    ("{}", "validation_error"),
    ('{"youtube_url": 42}', "validation_error"),
    ('{"youtube_url": null}', "validation_error"),
    ('{"youtube_url": ["https://youtu.be/dQw4w9WgXcQ"]}', "validation_error"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "language": 1}', "validation_error"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "model": false}', "validation_error"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "priority": "high"}', "validation_error"),
    ('{"youtube_url": "ftp://youtube.com/watch?v=dQw4w9WgXcQ"}', "invalid_url"),
    ('{"youtube_url": "file:///etc/passwd"}', "invalid_url"),
    ('{"youtube_url": "https://www.youtube.com/watch?v=bad"}', "invalid_url"),
    ('{"youtube_url": "https://vimeo.com/1234"}', "host_not_allowed"),
    ('{"youtube_url": "https://www.youtube.com/playlist?list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs"}',
     "playlist_not_supported"),
    ('{"youtube_url": "https://www.youtube.com/@someone"}', "channel_not_supported"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "model": "large-v3"}', "unknown_model"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "language": "klingon"}', "unknown_language"),
    ('{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "language": "fr"}', "unknown_language"),  # tiny.en
])
def test_bad_input_gives_400_with_a_code_and_a_sentence(client, make_user, services, body, code):
    _, headers = make_user("free")
    response = client.post("/api/v1/transcribe/async/submit", data=body,
                           headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == code
    assert payload["message"].endswith(".") and len(payload["message"]) > 10
    assert services.queues["standard"].count == 0


def test_language_is_case_insensitive_and_auto_is_the_default(client, make_user, redis):
    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE, language="EN").get_json()["job_id"]
    assert Job.fetch(job_id, connection=redis).kwargs["language"] == "en"
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    assert Job.fetch(job_id, connection=redis).kwargs["language"] is None


def test_body_too_large_gives_413(client, make_user):
    _, headers = make_user("free")
    response = submit(client, headers, YOUTUBE, padding="x" * 100_000)
    assert response.status_code == 413
    assert response.get_json() == {"error": "request_entity_too_large",
                                   "message": "The request body is larger than 64 KiB, the most accepted here."}


def post_chunked(port: int, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
    """POST ``body`` with ``Transfer-Encoding: chunked`` (8 KiB chunks, no Content-Length) over a real socket."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        chunks = (body[offset:offset + 8192] for offset in range(0, len(body), 8192))
        connection.request("POST", path, body=chunks, encode_chunked=True,
                           headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_gives_413_under_gunicorn(make_user):
    """gunicorn passes a chunked body on without a length; Werkzeug stops reading it at the limit,
    which once made a body too large look like JSON cut short (400 invalid_json)."""
    _, headers = make_user("pro")
    exact = json.dumps({"youtube_url": YOUTUBE}).encode().ljust(MAX_BODY_BYTES)  # spaces: still one JSON object
    port = free_port()
    api = start_api(port)
    try:
        answers = {size: post_chunked(port, "/api/v1/transcribe/async/submit", headers, exact.ljust(size))
                   for size in (MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES)}
        batch = post_chunked(port, "/api/v1/transcribe/async/batch", headers,
                             json.dumps({"videos": [{"youtube_url": YOUTUBE}]}).encode().ljust(MAX_BODY_BYTES + 1))
    finally:
        stop_process(api)
    assert answers[MAX_BODY_BYTES][0] == 202, answers[MAX_BODY_BYTES]
    too_large = (413, {"error": "request_entity_too_large",
                       "message": "The request body is larger than 64 KiB, the most accepted here."})
    assert answers[MAX_BODY_BYTES + 1] == answers[2 * MAX_BODY_BYTES] == batch == too_large


@pytest.mark.parametrize("allowed, words", [
    ("", "only YouTube URLs are accepted here."),
    ("media.example.com", "only YouTube URLs and URLs on the hosts this server allows are accepted here."),
])
def test_host_not_allowed_says_what_this_server_accepts(make_client, make_user, allowed, words):
    client = make_client(ALLOWED_URL_HOSTS=allowed)
    _, headers = make_user("free")
    response = submit(client, headers, "https://vimeo.com/1234")
    assert response.get_json() == {"error": "host_not_allowed", "message": f"Host 'vimeo.com' is not allowed: {words}"}


def test_unknown_route_and_wrong_method_answer_json(client):
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = client.get("/api/v1/transcribe/async/submit")
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


@pytest.mark.parametrize("job_id", ["no-such-job", "x" * 65, "a:b", "..", "%00"])
def test_unknown_job_gives_404(client, make_user, job_id):
    _, headers = make_user("free")
    for response in (client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=headers),
                     client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers),
                     client.get(f"/api/v1/transcriptions/{job_id}", headers=headers)):
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_another_users_job_looks_exactly_like_a_missing_one(client, make_user):
    _, alice = make_user("pro")
    _, mallory = make_user("pro")
    job_id = submit(client, alice, YOUTUBE).get_json()["job_id"]
    theirs = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=mallory)
    missing = client.get("/api/v1/transcribe/async/status/00000000-0000-0000-0000-000000000000", headers=mallory)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json()["error"] == missing.get_json()["error"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=mallory).status_code == 404
    assert status(client, alice, job_id)["status"] == "pending"


def test_pending_status_shows_the_queue_position(client, make_user):
    _, headers = make_user("free")
    first = submit(client, headers, YOUTUBE).get_json()["job_id"]
    second = submit(client, headers, YOUTUBE, cache=False).get_json()["job_id"]  # not the same work as the first
    body = status(client, headers, second)
    assert (body["status"], body["stage"], body["progress"], body["position"]) == ("pending", "queued", 0, 1)
    assert status(client, headers, first)["position"] == 0


def test_a_job_that_has_not_ended_says_when_to_ask_again_one_that_ended_does_not(client, make_user):
    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    pending = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=headers)
    assert pending.get_json()["status"] == "pending" and pending.headers["Retry-After"] == "1"
    client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers)
    ended = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=headers)
    assert ended.get_json()["status"] == "cancelled" and "Retry-After" not in ended.headers


def test_cancel_a_queued_job_twice(client, make_user, services):
    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    first = client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers)
    assert first.status_code == 200 and first.get_json()["status"] == "cancelled"
    again = client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers)
    assert again.status_code == 200 and again.get_json()["status"] == "cancelled"
    assert services.queues["standard"].count == 0
    assert status(client, headers, job_id)["status"] == "cancelled"


def test_unknown_transcript_format_gives_400(client, make_user):
    _, headers = make_user("free")
    response = client.get("/api/v1/transcriptions/abc?format=docx", headers=headers)
    assert response.status_code == 400 and response.get_json()["error"] == "unknown_format"


def test_idempotency_key_returns_the_same_job(client, make_user, services):
    _, headers = make_user("pro")
    first = submit(client, {**headers, "Idempotency-Key": "order-42"}, YOUTUBE, cache=False)
    again = submit(client, {**headers, "Idempotency-Key": "order-42"}, YOUTUBE, cache=False)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert (first.headers["Idempotent-Replayed"], again.headers["Idempotent-Replayed"]) == ("false", "true")
    assert services.queues["express"].count == 1
    other = submit(client, {**headers, "Idempotency-Key": "order-43"}, YOUTUBE, cache=False)  # a run of its own
    assert other.get_json()["job_id"] != first.get_json()["job_id"]
    assert services.queues["express"].count == 2


def test_idempotency_keys_belong_to_one_user(client, make_user):
    _, alice = make_user("pro")
    _, bob = make_user("pro")
    a = submit(client, {**alice, "Idempotency-Key": "same"}, YOUTUBE).get_json()["job_id"]
    b = submit(client, {**bob, "Idempotency-Key": "same"}, YOUTUBE).get_json()["job_id"]
    assert a != b


def test_an_idempotency_key_reused_for_another_request_gives_422(client, make_user):
    _, headers = make_user("pro")
    submit(client, {**headers, "Idempotency-Key": "k1"}, YOUTUBE)
    response = submit(client, {**headers, "Idempotency-Key": "k1"}, "https://youtu.be/jNQXAC9IVRw")
    assert response.status_code == 422 and response.get_json()["error"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "ключ"])
def test_a_malformed_idempotency_key_gives_400(client, make_user, key):
    _, headers = make_user("pro")
    response = client.post("/api/v1/transcribe/async/submit", json={"youtube_url": YOUTUBE},
                           headers=[*headers.items(), ("Idempotency-Key", key)])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_idempotency_key"


def test_concurrent_retries_with_one_idempotency_key_enqueue_one_job(config, make_user, services):
    """Twenty threads, each with its own app client, send the same keyed submit at once."""
    from concurrent.futures import ThreadPoolExecutor

    _, headers = make_user("pro")
    app = create_app(config)

    def send(_):
        return submit(app.test_client(), {**headers, "Idempotency-Key": "burst"}, YOUTUBE).get_json()["job_id"]

    with ThreadPoolExecutor(20) as pool:
        job_ids = set(pool.map(send, range(20)))
    assert len(job_ids) == 1
    assert services.queues["express"].count == 1
    user = services.users.authenticate(headers["Authorization"].split()[1])[0]
    assert services.quota.usage(user).used == 1  # charged once: the replays were never charged


def test_status_of_a_retry_the_scheduler_is_just_enqueueing_is_pending(client, make_user, redis):
    """Between reading a job's status (scheduled) and its retry time, the scheduler may enqueue it."""
    from rq.job import JobStatus

    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    Job.fetch(job_id, connection=redis).set_status(JobStatus.SCHEDULED)  # but in no scheduled registry
    body = status(client, headers, job_id)
    assert (body["status"], body["stage"], body["position"]) == ("pending", "queued", 0)


def test_a_job_queued_again_after_a_failed_attempt_says_so(client, make_user, redis):
    """Between a failed attempt and the next, the job's record still holds that attempt's stage
    and error: the status says queued, and which attempt comes next."""
    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    job = Job.fetch(job_id, connection=redis)
    job.meta.update(stage="downloading", progress=7, attempt=1,
                    error={"type": "download_failed", "message": "The video host answered HTTP 503."})
    job.save_meta()  # what a failed first attempt leaves, the job back on its queue
    body = status(client, headers, job_id)
    assert (body["status"], body["stage"], body["progress"], body["attempt"], body["position"]) == (
        "pending", "queued", 0, 2, 0)
    assert body["last_error"]["type"] == "download_failed"


def test_status_describes_one_consistent_snapshot_of_the_job(client, make_user, redis):
    """A job that ends between reading its record and its status must not show as completed
    beside the record's empty ended_at (seen once under load)."""
    from rq.job import JobStatus

    from app.core.jobs import describe_job

    _, headers = make_user("free")
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    snapshot = Job.fetch(job_id, connection=redis)
    Job.fetch(job_id, connection=redis).set_status(JobStatus.FINISHED)  # meanwhile, elsewhere
    body = describe_job(snapshot)
    assert (body.status, body.ended_at) == ("pending", None)
    assert status(client, headers, job_id)["status"] == "completed"  # the next poll sees the end
