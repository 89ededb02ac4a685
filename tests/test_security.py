"""Users, keys, quotas, rate limits, ownership and the URL policy (SSRF)."""

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.core import urls
from app.core.quota import period_of
from app.core.redis_server import free_port
from tests.helpers import http, start_api, status, stop_process, submit

YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


def new_user(client, tier="free", email="u@example.com", **kwargs):
    users = client.application.extensions["ytcaption"].users
    user, key = users.create(email, tier, **kwargs)
    return user, {"Authorization": f"Bearer {key}"}


# --- quota ----------------------------------------------------------------------------------------


def test_exactly_the_remaining_quota_is_accepted_under_100_concurrent_submits(config, services):
    """100 submits at once over real HTTP (gunicorn, 2 processes) with 10 jobs left: 10 accepted."""
    user, headers = services.users.create("race@example.com", "enterprise", quota=10)[0], None
    key = services.users.issue_key(user.id)
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    api = start_api(port)
    try:
        barrier = threading.Barrier(100)

        def send(_):
            barrier.wait()
            return http("POST", f"http://127.0.0.1:{port}/api/v1/transcribe/async/submit", headers,
                        {"youtube_url": YOUTUBE, "cache": False})  # each a run of its own

        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(send, range(100)))
    finally:
        stop_process(api)
    codes = [code for code, _, _ in answers]
    print(f"quota race: {codes.count(202)} accepted, {codes.count(429)} refused out of 100")
    assert (codes.count(202), codes.count(429)) == (10, 90)
    refused = next(json.loads(text) for code, _, text in answers if code == 429)
    assert refused["error"] == "quota_exceeded" and refused["quota"]["limit"] == 10
    assert refused["quota"]["resets_at"].endswith("T00:00:00Z")
    assert services.queues["express"].count == 10
    assert services.quota.usage(user).used == 10


def test_twenty_concurrent_replays_with_the_last_unit_left_all_name_the_one_job(config, services):
    """The same keyed submit 20 times at once over real HTTP (gunicorn, 2 processes), with 1 job left:
    one job, one unit charged, and all 20 answers 202 with its id. A replay is neither charged nor
    refused at the quota edge (it once was: the first request charged the unit before it claimed
    the key, and a copy that looked in between got 429). Five users, five bursts."""
    port = free_port()
    api = start_api(port)
    url = f"http://127.0.0.1:{port}/api/v1/transcribe/async/submit"
    bursts = []
    try:
        for number in range(5):
            user = services.users.create(f"edge{number}@example.com", "enterprise", quota=1)[0]
            headers = {"Authorization": f"Bearer {services.users.issue_key(user.id)}", "Idempotency-Key": "retry-1"}
            barrier = threading.Barrier(20)

            def send(_, headers=headers, barrier=barrier):
                barrier.wait()
                return http("POST", url, headers, {"youtube_url": YOUTUBE, "cache": False})

            with ThreadPoolExecutor(20) as pool:
                bursts.append((user, list(pool.map(send, range(20)))))
    finally:
        stop_process(api)
    for user, answers in bursts:
        assert [code for code, _, _ in answers] == [202] * 20, [text for code, _, text in answers if code != 202]
        assert len({json.loads(text)["job_id"] for _, _, text in answers}) == 1
        assert sorted(headers["Idempotent-Replayed"] for _, headers, _ in answers) == ["false"] + ["true"] * 19
        assert services.quota.usage(user).used == 1
    assert services.queues["express"].count == 5


def test_quota_headers_and_me(make_client):
    client = make_client(QUOTA_FREE="5")
    _, headers = new_user(client)
    response = submit(client, headers, YOUTUBE)
    assert (response.headers["X-Quota-Limit"], response.headers["X-Quota-Remaining"]) == ("5", "4")
    now = datetime.now(timezone.utc)
    reset = datetime.fromtimestamp(int(response.headers["X-Quota-Reset"]), timezone.utc)
    assert reset > now and reset.day == 1 and (reset.hour, reset.minute) == (0, 0)
    me = client.get("/api/v1/me", headers=headers).get_json()
    assert me["tier"] == "free" and me["queue"] == "standard" and me["max_video_duration"] == 3600
    assert me["quota"] == {"limit": 5, "used": 1, "remaining": 4, "period": period_of(now),
                           "resets_at": reset.isoformat().replace("+00:00", "Z")}


def test_last_months_usage_does_not_count(make_client, redis):
    client = make_client(QUOTA_FREE="1")
    user, headers = new_user(client)
    redis.set(f"ytcaption:usage:{user.id}:2000-01", 999)
    assert submit(client, headers, YOUTUBE).status_code == 202
    assert submit(client, headers, YOUTUBE).status_code == 429


def test_a_per_user_override_beats_the_tier_default(make_client):
    client = make_client(QUOTA_PRO="100")
    _, headers = new_user(client, "pro", quota=1)
    assert submit(client, headers, YOUTUBE).status_code == 202
    assert submit(client, headers, YOUTUBE).status_code == 429


def test_cancelling_a_queued_job_gives_its_unit_back_once(make_client):
    client = make_client(QUOTA_FREE="3")
    _, headers = new_user(client)
    job_id = submit(client, headers, YOUTUBE).get_json()["job_id"]
    for _ in range(2):
        client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers)
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 0


def test_a_job_that_fails_for_good_gives_its_unit_back(make_client, media_server, run_worker):
    client = make_client(QUOTA_FREE="3")
    _, headers = new_user(client)
    ok = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    bad = submit(client, headers, media_server.url("nothing-here.webm")).get_json()["job_id"]
    run_worker()
    assert (status(client, headers, ok)["status"], status(client, headers, bad)["status"]) == ("completed", "failed")
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 1


def test_an_idempotent_replay_is_not_charged(make_client):
    client = make_client(QUOTA_FREE="5")
    _, headers = new_user(client)
    for _ in range(3):
        submit(client, {**headers, "Idempotency-Key": "once"}, YOUTUBE)
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 1


def test_tier_limits_video_duration(make_client, media_server, run_worker):
    client = make_client(MAX_VIDEO_DURATION_FREE="10")  # the lecture lasts 24 s
    _, free = new_user(client, "free", "free@example.com")
    _, pro = new_user(client, "pro", "pro@example.com")
    free_job = submit(client, free, media_server.url("lecture.webm")).get_json()["job_id"]
    pro_job = submit(client, pro, media_server.url("lecture.webm")).get_json()["job_id"]
    run_worker()
    assert status(client, free, free_job)["error"]["type"] == "video_too_long"
    assert status(client, pro, pro_job)["status"] == "completed"


# --- keys and rate limits -----------------------------------------------------------------


def test_several_keys_each_revocable(client, services):
    user, headers = new_user(client)
    second = {"Authorization": f"Bearer {services.users.issue_key(user.id)}"}
    assert client.get("/api/v1/me", headers=second).status_code == 200
    first_id = services.users.keys(user.id)[0].key_id
    services.users.revoke_key(first_id)
    revoked = client.get("/api/v1/me", headers=headers)
    assert revoked.status_code == 401 and revoked.get_json()["error"] == "unauthorized"
    assert client.get("/api/v1/me", headers=second).status_code == 200
    assert [key.key_id for key in services.users.keys(user.id)] != [first_id]


def test_rate_limit_gives_429_with_retry_after(make_client):
    client = make_client(RATE_LIMIT_FREE="3")
    _, headers = new_user(client)
    answers = [client.get("/api/v1/me", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[2].headers["X-RateLimit-Remaining"] == "0"
    limited = answers[3]
    assert limited.get_json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_api_keys_never_reach_the_logs(client, caplog, media_server):
    caplog.set_level(logging.DEBUG)
    _, headers = new_user(client)
    submit(client, headers, YOUTUBE)
    client.get("/api/v1/transcribe/async/status/nope", headers=headers)
    client.get("/api/v1/me", headers={"Authorization": headers["Authorization"] + "x"})
    key = headers["Authorization"].split()[1]
    assert key not in caplog.text


# --- ownership ------------------------------------------------------------------------------------


def test_cross_tenant_matrix_and_admins(client, media_server, run_worker):
    _, alice = new_user(client, "pro", "alice@example.com")
    _, bob = new_user(client, "pro", "bob@example.com")
    _, admin = new_user(client, "free", "admin@example.com", role="admin")
    job_id = submit(client, alice, media_server.url("fox.m4a")).get_json()["job_id"]
    queued = submit(client, alice, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    transcription = status(client, alice, job_id)["result"]["transcription_id"]
    endpoints = [
        ("GET", f"/api/v1/transcribe/async/status/{job_id}"),
        ("GET", f"/api/v1/transcriptions/{transcription}"),
        ("GET", f"/api/v1/transcriptions/{transcription}?format=srt"),
        ("GET", f"/api/v1/transcriptions/{transcription}?format=vtt"),
        ("GET", f"/api/v1/transcriptions/{transcription}?format=txt"),
        ("DELETE", f"/api/v1/transcribe/async/cancel/{job_id}"),
    ]
    for method, path in endpoints:
        answer = client.open(path, method=method, headers=bob)
        assert (answer.status_code, answer.get_json()["error"]) == (404, "not_found"), path
    for method, path in endpoints[:-1]:
        assert client.open(path, method=method, headers=admin).status_code == 200, path
    assert client.delete(f"/api/v1/transcribe/async/cancel/{queued}", headers=admin).status_code in (200, 409)


def test_admin_endpoints_need_an_admin(client):
    _, user = new_user(client, "enterprise", "boss@example.com")
    _, admin = new_user(client, "free", "ops@example.com", role="admin")
    assert client.get("/api/v1/admin/users").status_code == 401
    forbidden = client.get("/api/v1/admin/users", headers=user)
    assert (forbidden.status_code, forbidden.get_json()["error"]) == (403, "forbidden")
    listing = client.get("/api/v1/admin/users", headers=admin).get_json()["users"]
    assert {u["email"] for u in listing} == {"boss@example.com", "ops@example.com"}
    assert all("quota" in u and "key" not in json.dumps(u).lower().replace('"keys"', "") for u in listing)


# --- URL policy -----------------------------------------------------------------------------------

FAKE_DNS = {
    "cdn.media.example.com": ["93.184.216.34"],
    "loop.media.example.com": ["127.0.0.1"],
    "meta.media.example.com": ["169.254.169.254"],
    "mixed.media.example.com": ["93.184.216.34", "10.1.2.3"],
    "v6.media.example.com": ["::1"],
    "mapped.media.example.com": ["::ffff:192.168.0.1"],
}


@pytest.fixture
def ssrf_client(make_client, monkeypatch):
    """A client allowing media.example.com; DNS (the outside world) answers from FAKE_DNS."""

    def resolve(host):
        if host not in FAKE_DNS:
            raise OSError("no such host")
        return FAKE_DNS[host]

    monkeypatch.setattr(urls, "resolve_host", resolve)
    client = make_client(ALLOWED_URL_HOSTS="media.example.com")
    return client, new_user(client, "pro")[1]


@pytest.mark.parametrize("url, code", [
    ("http://127.0.0.1/", "host_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "host_not_allowed"),
    ("http://[::1]/", "host_not_allowed"),
    ("http://10.0.0.1/", "host_not_allowed"),
    ("http://0.0.0.0/", "host_not_allowed"),
    ("http://localhost/", "host_not_allowed"),
    ("http://loop.media.example.com/a.mp3", "host_not_allowed"),  # resolves to loopback
    ("http://meta.media.example.com/a.mp3", "host_not_allowed"),  # resolves to cloud metadata
    ("http://mixed.media.example.com/a.mp3", "host_not_allowed"),  # one private address is enough
    ("http://v6.media.example.com/a.mp3", "host_not_allowed"),
    ("http://mapped.media.example.com/a.mp3", "host_not_allowed"),
    ("http://cdn.media.example.com:8080/a.mp3", "host_not_allowed"),  # odd port on a sub-domain
    ("http://media.example.com:8080/a.mp3", "host_not_allowed"),  # listed bare: default ports only
    ("http://nowhere.media.example.com/a.mp3", "invalid_url"),  # does not resolve
    ("http://media.example.com.evil.test/a.mp3", "host_not_allowed"),
    ("https://www.youtube.com:8443/watch?v=dQw4w9WgXcQ", "host_not_allowed"),
    ("file:///etc/passwd", "invalid_url"),
    ("ftp://media.example.com/a.mp3", "invalid_url"),
    ("gopher://media.example.com/", "invalid_url"),
    ("http://user:pass@youtube.com/watch?v=dQw4w9WgXcQ", "invalid_url"),
    ("http://user@media.example.com/a.mp3", "invalid_url"),
])
def test_ssrf_table(ssrf_client, url, code):
    client, headers = ssrf_client
    response = submit(client, headers, url)
    assert (response.status_code, response.get_json()["error"]) == (400, code)


@pytest.mark.parametrize("url", [
    "http://media.example.com/a.mp3",  # listed: trusted at any address, on its default ports
    "https://cdn.media.example.com/a.mp3",  # a sub-domain with public addresses only
])
def test_allowed_urls(ssrf_client, url):
    client, headers = ssrf_client
    assert submit(client, headers, url).status_code == 202


def test_a_redirect_to_a_disallowed_host_is_not_followed(client, media_server, run_worker):
    _, headers = new_user(client, "pro")
    target = media_server.url("fox.m4a").replace("127.0.0.1", "localhost") + "?via=redirect"
    job_id = submit(client, headers, media_server.url("start", to=target)).get_json()["job_id"]
    run_worker()
    body = status(client, headers, job_id)
    assert (body["status"], body["error"]["type"], body["attempt"]) == ("failed", "redirect_not_allowed", 1)
    assert "localhost" in body["error"]["message"]
    assert [entry for entry in media_server.httpd.requests if entry[2].startswith("/fox.m4a?via=redirect")] == []


def test_a_redirect_within_the_allowed_host_is_followed(client, media_server, run_worker):
    _, headers = new_user(client, "pro")
    job_id = submit(client, headers, media_server.url("hop", to=media_server.url("fox.m4a"))).get_json()["job_id"]
    run_worker()
    assert status(client, headers, job_id)["status"] == "completed"


# --- fuzzing ----------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({"youtube_url": st.one_of(st.text(max_size=80), _json_values,
                                                    st.sampled_from([YOUTUBE, "https://youtu.be/x", "http://[::1"]))},
                          optional={"language": _json_values | st.sampled_from(["en", "auto", "EN", "xx"]),
                                    "model": _json_values | st.sampled_from(["tiny.en", "large"])}),
)


def test_openapi_document_is_served(client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) >= {"/api/v1/transcribe/async/submit", "/api/v1/transcribe/async/status/{job_id}",
                                  "/api/v1/transcribe/async/cancel/{job_id}",
                                  "/api/v1/transcriptions/{transcription_id}", "/api/v1/me"}


@pytest.fixture
def fuzz_client(make_client):
    client = make_client(RATE_LIMIT_PRO="100000", QUOTA_PRO="100000")
    return client, new_user(client, "pro", "fuzz@example.com")[1]


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, raw=st.binary(max_size=200), idempotency=st.none() | st.text(max_size=20))
def test_fuzzed_submits_never_give_a_5xx(fuzz_client, body, raw, idempotency):
    client, headers = fuzz_client
    extra = {"Idempotency-Key": idempotency} if idempotency else {}
    for data in (json.dumps(body), raw):
        try:
            response = client.post("/api/v1/transcribe/async/submit", data=data,
                                   headers={**headers, **extra, "Content-Type": "application/json"})
        except ValueError:  # the test client itself refuses some header values (e.g. newlines)
            continue
        assert response.status_code < 500, response.get_json()
        assert response.is_json and "error" in response.get_json() or response.status_code == 202


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.text(min_size=1, max_size=80), fmt=st.text(max_size=10),
       method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]))
def test_fuzzed_paths_never_give_a_5xx(fuzz_client, job_id, fmt, method):
    client, headers = fuzz_client
    from urllib.parse import quote

    for path in (f"/api/v1/transcribe/async/status/{quote(job_id, safe='')}",
                 f"/api/v1/transcribe/async/cancel/{quote(job_id, safe='')}",
                 f"/api/v1/transcriptions/{quote(job_id, safe='')}?format={quote(fmt, safe='')}"):
        response = client.open(path, method=method, headers=headers)
        assert response.status_code < 500 and response.is_json
