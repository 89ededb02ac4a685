"""/metrics with two gunicorn processes: job metrics from Redis, HTTP metrics across processes."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.redis_server import free_port
from tests.helpers import http, start_api, status, stop_process, submit


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    code, _, text = http("GET", url + "/metrics", headers)
    assert code == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_after_known_activity(client, make_user, media_server, run_worker, services, config):
    _, pro = make_user("pro")
    _, free = make_user("free")
    done = [submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"] for _ in range(2)]
    broken = submit(client, pro, media_server.url("absent.webm")).get_json()["job_id"]
    cancelled = submit(client, free, media_server.url("fox.m4a")).get_json()["job_id"]
    client.delete(f"/api/v1/transcribe/async/cancel/{cancelled}", headers=free)
    waiting = submit(client, free, media_server.url("fox.m4a")).get_json()["job_id"]
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


def test_active_workers_are_counted_per_queue(config, redis):
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


@pytest.mark.parametrize("headers, code", [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                           ({"Authorization": "Bearer s3cret"}, 200)])
def test_metrics_can_require_a_token(config, headers, code):
    from app import create_app

    client = create_app({**config, "METRICS_TOKEN": "s3cret"}).test_client()
    assert client.get("/metrics", headers=headers).status_code == code
