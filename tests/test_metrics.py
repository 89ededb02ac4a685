"""/metrics with two gunicorn processes: job metrics from Redis, HTTP metrics across processes."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.redis_server import free_port
from tests.helpers import http, start_api, status, stop_process, submit

TOKEN = "scrape-token-0123456789"


@pytest.fixture
def metrics_token(monkeypatch):
    """The API these tests start reads METRICS_TOKEN from the environment; scrape() sends it, as Prometheus would."""
    monkeypatch.setenv("METRICS_TOKEN", TOKEN)


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    code, _, text = http("GET", url + "/metrics", headers or {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_after_known_activity(client, make_user, media_server, run_worker, services, config, metrics_token):
    _, pro = make_user("pro")
    _, free = make_user("free")
    done = [submit(client, pro, media_server.url("fox.m4a"), cache=False).get_json()["job_id"] for _ in range(2)]
    broken = submit(client, pro, media_server.url("absent.webm")).get_json()["job_id"]
    cancelled = submit(client, free, media_server.url("fox.m4a"), cache=False).get_json()["job_id"]
    client.delete(f"/api/v1/transcribe/async/cancel/{cancelled}", headers=free)
    waiting = submit(client, free, media_server.url("fox.m4a"), cache=False).get_json()["job_id"]
    run_worker(["express"])
    assert [status(client, pro, j)["status"] for j in done + [broken]] == ["completed", "completed", "failed"]
    assert status(client, free, waiting)["status"] == "pending"

    port = free_port()
    api = start_api(port)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(20):
            assert http("GET", url + "/readyz")[0] == 200
        scrapes = [scrape(url) for _ in range(6)]  # answered by either gunicorn process
        samples = scrapes[0]
    finally:
        stop_process(api)

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    assert value("ytcaption_jobs_submitted_total", queue="express", task_name="transcribe_video") == 3
    assert value("ytcaption_jobs_submitted_total", queue="standard", task_name="transcribe_video") == 2
    assert value("ytcaption_jobs_completed_total", queue="express", status="finished") == 2
    assert value("ytcaption_jobs_completed_total", queue="express", status="failed") == 1
    assert value("ytcaption_jobs_completed_total", queue="standard", status="cancelled") == 1
    assert value("ytcaption_job_duration_seconds_count", task_name="transcribe_video") == 3
    assert value("ytcaption_job_duration_seconds_bucket", task_name="transcribe_video", le="+Inf") == 3
    assert value("ytcaption_job_duration_seconds_sum", task_name="transcribe_video") > 0
    assert value("ytcaption_queue_length", queue="standard") == 1
    assert value("ytcaption_queue_length", queue="express") == 0
    assert value("ytcaption_active_workers", queue="express") == 0
    # 20 requests served by two gunicorn processes, all counted whichever process is scraped.
    def readyz_count(samples):
        return sum(v for (name, labels), v in samples.items()
                   if name == "flask_http_request_duration_seconds_count" and ("url_rule", "/readyz") in labels)

    assert [readyz_count(s) for s in scrapes] == [20] * 6
    assert sum(v for (name, labels), v in samples.items()
               if name == "flask_http_request_total" and ("status", "200") in labels) >= 20


def test_active_workers_are_counted_per_queue(config, redis, metrics_token):
    from tests.helpers import start_worker

    port = free_port()
    api = start_api(port)
    worker = start_worker(redis, "express")
    try:
        samples = scrape(f"http://127.0.0.1:{port}")
    finally:
        stop_process(worker)
        stop_process(api)
    assert samples[("ytcaption_active_workers", (("queue", "express"),))] == 1
    assert samples[("ytcaption_active_workers", (("queue", "standard"),))] == 0


@pytest.mark.parametrize("settings, headers, code", [
    ({"METRICS_TOKEN": "s3cret"}, {}, 401),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Bearer wrong"}, 401),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Basic s3cret"}, 401),
    ({"METRICS_TOKEN": "s3cret"}, {"Authorization": "Bearer s3cret"}, 200),
    ({"METRICS_PUBLIC": "true"}, {}, 200),
    ({"METRICS_PUBLIC": "false"}, {"Authorization": "Bearer anything"}, 403),
])
def test_metrics_answer_the_token_or_anyone_when_public(config, settings, headers, code):
    from app import create_app

    answer = create_app({**config, **settings}).test_client().get("/metrics", headers=headers)
    assert answer.status_code == code
    if code == 401:
        assert answer.get_json()["error"] == "unauthorized" and answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_metrics_are_closed_until_the_operator_sets_a_token_or_opens_them(config):
    """Unset, /metrics used to be open to anyone who could reach the API; now it says what to set."""
    from app import create_app

    answer = create_app(config).test_client().get("/metrics")
    assert (answer.status_code, answer.get_json()) == (403, {
        "error": "metrics_closed",
        "message": "/metrics is closed: the operator must set METRICS_TOKEN (and scrape with 'Authorization: "
                   "Bearer <token>'), or METRICS_PUBLIC=true to open it to anyone who can reach the API."})


@pytest.mark.parametrize("settings, words", [
    ({"METRICS_TOKEN": "s3cret", "METRICS_PUBLIC": "true"}, "METRICS_TOKEN and METRICS_PUBLIC=true are both set"),
    ({"METRICS_TOKEN": "  "}, "METRICS_TOKEN is blank"),
])
def test_contradictory_or_blank_metrics_settings_stop_the_start(settings, words):
    from app.core.errors import ConfigurationError
    from app.core.settings import Settings

    with pytest.raises(ConfigurationError, match=words):
        Settings.load(settings)


def test_the_metrics_token_is_a_secret():
    from app.core.settings import Settings

    settings = Settings.load({"METRICS_TOKEN": "s3cret"})
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()
    assert settings.to_environ()["METRICS_TOKEN"] == "s3cret"  # passed on to the API that `ytcaption up` starts
