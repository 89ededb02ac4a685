"""Reliability with real processes and real signals: retries, worker loss, SIGTERM, Redis restarts."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from app import create_app
from app.core.redis_server import RedisServer, free_port
from tests.helpers import (
    children,
    horse_of,
    http,
    job_status,
    poll_until_done,
    start_api,
    start_worker,
    status,
    stop_process,
    submit,
    wait_for,
)


def start_long_job(client, headers, media_server, delay: float) -> str:
    """Submit the lecture trickled at ``delay`` s per 4 KiB and wait until it is downloading."""
    job_id = submit(client, headers, media_server.url("lecture.webm", delay=delay)).get_json()["job_id"]
    wait_for(lambda: status(client, headers, job_id)["stage"] == "downloading", timeout=60, message="the download")
    return job_id


def user_headers(client, tier="pro", email="rel@example.com") -> dict:
    _, key = client.application.extensions["ytcaption"].users.create(email, tier)
    return {"Authorization": f"Bearer {key}"}


def run_on_a_new_worker(redis, client, headers, job_id: str, *statuses: str, timeout: float = 60,
                        interval: float = 0.05) -> None:
    """Start a worker, wait until the job's status is one of ``statuses``, stop the worker."""
    worker = start_worker(redis)
    try:
        wait_for(lambda: status(client, headers, job_id)["status"] in statuses, timeout=timeout, interval=interval,
                 message=f"the job to be {' or '.join(statuses)}")
    finally:
        stop_process(worker)


def test_a_transient_download_failure_is_retried_with_growing_delays(make_client, media_server, redis):
    client = make_client(JOB_RETRY_BASE="2", JOB_RETRY_MAX="30")
    headers = user_headers(client)
    url = media_server.url("fox.m4a", fail=2, token="flaky")  # 503, 503, then the file
    job_id = submit(client, headers, url).get_json()["job_id"]
    intervals = Job.fetch(job_id, connection=redis).retry_intervals
    assert 1 <= intervals[0] <= 2 <= intervals[1] <= 4 <= intervals[2] <= 8  # equal jitter: still growing

    run_on_a_new_worker(redis, client, headers, job_id, "completed", "failed")
    body = status(client, headers, job_id)
    assert (body["status"], body["attempt"]) == ("completed", 3), body
    failed = [t for t, _, _, code in media_server.requests_for("token=flaky") if code == 503]
    assert len(failed) == 2
    served = [t for t, _, _, code in media_server.requests_for("token=flaky") if code == 200]
    gaps = [failed[1] - failed[0], served[0] - failed[1]]
    print(f"retry delays: scheduled {intervals[:2]}, observed {[round(g, 2) for g in gaps]}")
    # Never before its delay (RQ keeps schedule times in whole seconds, truncated, so up to 1 s early);
    # a busy machine may only make a retry later, so the observed gaps need not grow themselves.
    assert gaps[0] >= intervals[0] - 1 and gaps[1] >= intervals[1] - 1


def test_a_missing_video_fails_at_once_without_retry(make_client, media_server, redis):
    client = make_client(JOB_RETRY_BASE="1")
    headers = user_headers(client)
    job_id = submit(client, headers, media_server.url("gone.webm")).get_json()["job_id"]
    # "failed" is final: a job waiting for a retry would be "pending" (stage waiting_retry).
    run_on_a_new_worker(redis, client, headers, job_id, "failed")
    body = status(client, headers, job_id)
    assert (body["error"]["type"], body["attempt"]) == ("video_unavailable", 1)
    assert len(media_server.requests_for("gone.webm")) == 1


def test_a_job_whose_work_horse_is_killed_is_run_again(make_client, media_server, redis, services):
    client = make_client(JOB_RETRY_BASE="1")
    headers = user_headers(client)
    worker = start_worker(redis)
    try:
        job_id = start_long_job(client, headers, media_server, delay=0.3)
        horse = wait_for(lambda: horse_of(worker.pid), message="the work horse")
        os.kill(horse, signal.SIGKILL)
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=120,
                 message="the job to complete on its second attempt")
    finally:
        stop_process(worker)
    assert status(client, headers, job_id)["attempt"] == 2
    assert len(list(redis.scan_iter("ytcaption:transcript:*"))) == 1


def test_a_job_whose_whole_worker_dies_is_run_by_another_worker(make_client, media_server, redis):
    """kill -9 of the worker, its horse and its scheduler: what a lost machine looks like.

    JOB_RETRY_BASE=0: the retry is enqueued at once, so the figure printed is how long finding
    the abandoned job takes (a delayed retry also waits for RQ's scheduler, whose lock the dead
    worker held for another minute)."""
    client = make_client(JOB_RETRY_BASE="0")
    headers = user_headers(client)
    workers = [start_worker(redis)]
    try:
        workers.append(start_worker(redis, expect=2))  # both ready before the job: no race with a slow start
        job_id = start_long_job(client, headers, media_server, delay=0.3)
        running_on = Worker.find_by_key(Worker.redis_worker_namespace_prefix + Job.fetch(
            job_id, connection=redis).worker_name, connection=redis).pid
        doomed = next(worker for worker in workers if worker.pid == running_on)
        killed_at = time.monotonic()
        for pid in [doomed.pid, *children(doomed.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        doomed.wait()
        wait_for(lambda: (body := status(client, headers, job_id))["status"] == "processing"
                 and body["attempt"] == 2, timeout=150, interval=0.5, message="the job to be picked up again")
        print(f"whole-worker kill: job running again on another worker after {time.monotonic() - killed_at:.1f} s")
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=60,
                 message="the job to complete")
    finally:
        for worker in workers:
            stop_process(worker)
    assert len(list(redis.scan_iter("ytcaption:transcript:*"))) == 1


def test_a_job_that_keeps_killing_its_worker_ends_failed(make_client, media_server, redis):
    client = make_client(JOB_RETRY_BASE="1", JOB_MAX_RETRIES="1")
    headers = user_headers(client)
    worker = start_worker(redis)
    try:
        job_id = submit(client, headers, media_server.url("lecture.webm", delay=0.3)).get_json()["job_id"]
        for attempt in (1, 2):
            wait_for(lambda: (s := status(client, headers, job_id))["stage"] == "downloading"
                     and s["attempt"] == attempt, timeout=60, message=f"attempt {attempt}")
            os.kill(wait_for(lambda: horse_of(worker.pid), message="the horse"), signal.SIGKILL)
        wait_for(lambda: status(client, headers, job_id)["status"] == "failed", timeout=60, message="failure")
    finally:
        stop_process(worker)
    body = status(client, headers, job_id)
    assert (body["attempt"], body["error"]["type"]) == (2, "worker_lost")


def test_sigterm_lets_a_short_job_finish(make_client, media_server, redis):
    client = make_client(WORKER_SHUTDOWN_GRACE="30")
    headers = user_headers(client)
    worker = start_worker(redis)
    job_id = submit(client, headers, media_server.url("queue.webm", delay=0.1)).get_json()["job_id"]
    wait_for(lambda: status(client, headers, job_id)["status"] == "processing", timeout=60, message="start")
    assert stop_process(worker, signal.SIGTERM, timeout=60) == 0
    assert status(client, headers, job_id)["status"] == "completed"


def test_sigterm_hands_a_long_job_back_to_the_front_of_its_queue(make_client, media_server, redis, services):
    client = make_client(WORKER_SHUTDOWN_GRACE="1")
    headers = user_headers(client)
    worker = start_worker(redis)
    long_job = start_long_job(client, headers, media_server, delay=0.5)
    later_job = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    signalled = time.monotonic()
    assert stop_process(worker, signal.SIGTERM, timeout=30) == 0
    print(f"worker exited {time.monotonic() - signalled:.1f} s after SIGTERM (grace 1 s)")
    body = status(client, headers, long_job)
    assert (body["status"], body["stage"], body["position"], body["attempt"]) == ("pending", "queued", 0, 1)
    assert services.queues["express"].job_ids == [long_job, later_job]
    assert Worker.count(connection=redis) == 0  # every process unregistered on its way out

    run_on_a_new_worker(redis, client, headers, long_job, "completed", timeout=90, interval=0.5)
    assert status(client, headers, long_job)["attempt"] == 1  # handing back used no attempt


def test_the_timeout_floor_stops_a_hung_download(make_client, media_server, run_worker):
    client = make_client(JOB_TIMEOUT_FLOOR="2")
    headers = user_headers(client)
    job_id = submit(client, headers, media_server.url("lecture.webm", delay=1)).get_json()["job_id"]
    run_worker()
    body = status(client, headers, job_id)
    assert (body["status"], body["error"]["type"], body["attempt"]) == ("failed", "job_timeout", 1)


def test_a_job_past_its_timeout_stops_at_its_next_progress_update(redis):
    """Should RQ's one alarm be swallowed (yt-dlp retries what it takes for a network error while it
    opens a connection), the job's own progress updates stop it."""
    from datetime import timedelta

    from rq.timeouts import JobTimeoutException
    from rq.utils import now

    from workers.jobs import Progress

    job = Queue("express", connection=redis).enqueue("builtins.len", "ab", job_timeout=2)
    job.started_at = now() - timedelta(seconds=10)
    with pytest.raises(JobTimeoutException):
        Progress(job).update("downloading", 5)


def test_the_timeout_grows_with_the_videos_duration(make_client, media_server, run_worker, redis):
    """Floor 8 s and a download of 10 s or more, but the metadata says 20 s: the job gets
    8 + 1.0 × 20 s, then 8 + 1.0 × 24 s once the decoded audio turns out to last 24 s.

    The floor leaves a busy machine time to read the metadata; the download outlasts it."""
    client = make_client(JOB_TIMEOUT_FLOOR="8", JOB_TIMEOUT_FACTOR="1.0")
    headers = user_headers(client)
    page = f"""<html><head><title>Talk</title><script type="application/ld+json">
    {{"@context": "https://schema.org", "@type": "VideoObject", "name": "Talk",
      "contentUrl": "{media_server.url('lecture.webm', delay=0.8)}", "duration": "PT20S"}}
    </script></head><body></body></html>"""
    job_id = submit(client, headers, media_server.add("timed.html", page.encode())).get_json()["job_id"]
    run_worker()
    body = status(client, headers, job_id)
    assert body["status"] == "completed" and body["result"]["timings"]["download"] > 8, body
    assert Job.fetch(job_id, connection=redis).timeout == 32


@pytest.mark.parametrize("setting, value, same_host", [
    ("ENGINE_MAX_JOBS", "2", [True, False]),  # a new host after two jobs
    ("ENGINE_MAX_MEMORY_MB", "1", [False, False]),  # every job leaves it above 1 MB
])
def test_the_engine_host_is_recycled(config, monkeypatch, client, make_user, media_server, run_worker, engine_host,
                                     setting, value, same_host):
    monkeypatch.setenv("ENGINE_MAX_JOBS", "0")
    monkeypatch.setenv("ENGINE_MAX_MEMORY_MB", "0")
    monkeypatch.setenv(setting, value)
    engine_host.stop(remove_socket_dir=False)
    engine_host.start()  # a fresh host: no jobs counted yet
    _, headers = make_user("pro")
    pids = [engine_host.process.pid]
    for _ in range(2):
        job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        run_worker()
        assert status(client, headers, job_id)["status"] == "completed"
        pids.append(engine_host.process.pid)
    assert [a == b for a, b in zip(pids, pids[1:])] == same_host
    assert engine_host.is_alive()


def test_queued_jobs_survive_redis_being_killed(tmp_path, config, media_server, monkeypatch, run_worker):
    """kill -9 Redis right after the 202s; restarted from its append-only file, the jobs complete."""
    port = free_port()
    server = RedisServer(tmp_path / "redis", port=port, persistent=True)
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    client = create_app({**config, "REDIS_URL": server.url}).test_client()
    headers = user_headers(client)
    job_ids = [submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"] for _ in range(3)]
    # appendfsync always: a 202 means the job is on disk; the kill comes at once.
    server.kill()

    server = RedisServer(tmp_path / "redis", port=port, persistent=True)
    server.start()
    try:
        connection = Redis.from_url(server.url)
        run_worker(connection=connection)
        assert [status(client, headers, job_id)["status"] for job_id in job_ids] == ["completed"] * 3
    finally:
        server.stop()


def test_api_and_worker_ride_out_a_redis_restart(tmp_path, config, media_server, monkeypatch):
    """Redis down: 503 with Retry-After, /healthz up. Back: submits work, the same worker runs them."""
    port = free_port()
    server = RedisServer(tmp_path / "redis", port=port, persistent=True)
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    connection = Redis.from_url(server.url)
    api_port = free_port()
    api = start_api(api_port)
    url = f"http://127.0.0.1:{api_port}"
    worker = start_worker(connection)
    try:
        headers = user_headers(create_app({**config, "REDIS_URL": server.url}).test_client())
        server.stop()

        code, response_headers, text = http("POST", url + "/api/v1/transcribe/async/submit", headers,
                                            {"youtube_url": media_server.url("fox.m4a")})
        assert code == 503 and response_headers["Retry-After"] and json.loads(text)["error"] == "service_unavailable"
        assert http("GET", url + "/readyz")[0] == 503
        assert http("GET", url + "/healthz")[0] == 200

        server = RedisServer(tmp_path / "redis", port=port, persistent=True)
        server.start()
        wait_for(lambda: http("GET", url + "/readyz")[0] == 200, timeout=30, message="readiness")
        code, _, text = http("POST", url + "/api/v1/transcribe/async/submit", headers,
                             {"youtube_url": media_server.url("fox.m4a")})
        assert code == 202, text
        job_id = json.loads(text)["job_id"]
        assert poll_until_done(url, headers, job_id, timeout=90)[-1]["status"] == "completed"
        assert worker.poll() is None and job_status(url, headers, job_id)["status"] == "completed"
    finally:
        stop_process(worker)
        stop_process(api)
        server.stop()


def test_a_worker_running_a_job_outlives_a_long_redis_outage(tmp_path, config, media_server, monkeypatch):
    """Redis gone for 10 s under a running job (a long failover, a restart): RQ's work loop quits and
    its clean-up fails too; the worker process stays, works again once Redis is back, and the job
    completes."""
    port = free_port()
    server = RedisServer(tmp_path / "redis", port=port, persistent=True)
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.setenv("JOB_RETRY_BASE", "0")
    client = create_app({**config, "REDIS_URL": server.url, "JOB_RETRY_BASE": "0"}).test_client()
    headers = user_headers(client)
    worker = start_worker(Redis.from_url(server.url))
    try:
        job_id = start_long_job(client, headers, media_server, delay=0.2)
        server.kill()
        outage = time.monotonic()
        wait_for(lambda: time.monotonic() - outage > 10 or worker.poll() is not None, timeout=30, interval=0.5,
                 message="the outage")
        assert worker.poll() is None, "the worker exited while Redis was down"
        server = RedisServer(tmp_path / "redis", port=port, persistent=True)
        server.start()
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=180, interval=0.5,
                 message="the job to complete after the outage")
        assert worker.poll() is None
    finally:
        stop_process(worker)
        server.stop()


def test_a_second_sigterm_hands_the_job_back_once_and_at_once(make_client, media_server, redis, services, tmp_path):
    """Two SIGTERMs during a job: the job goes back to the front of its queue at once, once, without
    using an attempt, and then runs to completion once. Its horse is frozen while the two signals
    reach it (a busy machine that does not run it for a moment), so it takes both at once."""
    client = make_client(WORKER_SHUTDOWN_GRACE="60", JOB_RETRY_BASE="1")
    headers = user_headers(client)
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        worker = start_worker(redis, stderr=output)
    job_id = start_long_job(client, headers, media_server, delay=0.5)
    attempts = Job.fetch(job_id, connection=redis).retries_left
    horse = wait_for(lambda: horse_of(worker.pid), message="the work horse")
    os.kill(horse, signal.SIGSTOP)
    try:
        worker.send_signal(signal.SIGTERM)
        # Two SIGTERMs sent before the first is handled would arrive as one: wait until it was.
        wait_for(lambda: log.read_bytes().count(b"killed horse pid") == 1, timeout=30,
                 message="the worker to pass the first SIGTERM on to its horse")
        worker.send_signal(signal.SIGTERM)
        wait_for(lambda: log.read_bytes().count(b"killed horse pid") == 2, timeout=30,
                 message="the worker to pass the second SIGTERM on to its horse")
    finally:
        os.kill(horse, signal.SIGCONT)
    resumed = time.monotonic()
    worker.wait(timeout=60)
    print(f"worker exited {time.monotonic() - resumed:.1f} s after its horse took both SIGTERMs")
    job = Job.fetch(job_id, connection=redis)
    express = services.queues["express"]
    assert (job.get_status(), job.retries_left) == ("queued", attempts)
    assert express.job_ids[0] == job_id and job_id not in express.scheduled_job_registry.get_job_ids()
    assert express.started_job_registry.count == 0

    run_on_a_new_worker(redis, client, headers, job_id, "completed", timeout=90, interval=0.5)
    job = Job.fetch(job_id, connection=redis)
    assert sorted(result.type.name for result in job.results()) == ["RETRIED", "SUCCESSFUL"]
    assert (status(client, headers, job_id)["attempt"], job.retries_left) == (1, attempts)
    assert job_id not in express.scheduled_job_registry.get_job_ids() and express.count == 0


def test_a_job_handing_itself_back_is_not_interrupted_again(make_client, media_server, redis, services):
    """The second SIGTERM hands the job back while Redis takes no writes for a few seconds (the hand
    back waits to record itself), and the grace period of the first SIGTERM ends meanwhile: the job
    is still handed back, once, without using an attempt, not failed and scheduled for a retry."""
    client = make_client(WORKER_SHUTDOWN_GRACE="3", JOB_RETRY_BASE="1")
    headers = user_headers(client)
    worker = start_worker(redis)
    job_id = start_long_job(client, headers, media_server, delay=0.5)
    attempts = Job.fetch(job_id, connection=redis).retries_left
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: Worker.all(connection=redis)[0].shutdown_requested_date, timeout=30,
             message="the worker to take the first SIGTERM")
    redis.execute_command("CLIENT", "PAUSE", 8000, "WRITE")  # past the grace period's end
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    job = Job.fetch(job_id, connection=redis)
    express = services.queues["express"]
    assert (job.get_status(), job.retries_left) == ("queued", attempts)
    assert express.job_ids == [job_id] and express.scheduled_job_registry.count == 0
    assert [result.type.name for result in job.results()] == ["RETRIED"]


@pytest.mark.parametrize("when", ["loading the model", "registering with RQ"])
def test_a_worker_stopped_while_starting_exits_cleanly(config, redis, when):
    """SIGTERM before RQ handles signals: while the engine host loads the model, or just after the
    worker registered (before RQ's own handlers are in place). Either way it stops, and leaves no
    registration behind."""
    from tests.helpers import ytcaption_command

    process = subprocess.Popen([ytcaption_command(), "worker"])
    if when == "registering with RQ":
        wait_for(lambda: Worker.count(connection=redis) or process.poll() is not None, timeout=120,
                 interval=0.005, message="the worker to register")
    else:
        # The engine host by name: importing yt-dlp runs short-lived children too (pycryptodomex asks
        # `file` and `ldconfig` about the system), before the worker handles signals at all.
        wait_for(lambda: _engine_host_of(process.pid) or process.poll() is not None, timeout=120, interval=0.005,
                 message="the engine host to start")
    started = children(process.pid)  # the engine host (and, once registered, RQ's scheduler process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert Worker.count(connection=redis) == 0
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in started), timeout=10,
             message="the worker's children to be gone")


def _forks_of(pid: int) -> list[int]:
    def cmdline(pid: int) -> bytes | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                return file.read()
        except OSError:
            return None

    return [child for child in children(pid) if cmdline(child) == cmdline(pid)]


def _engine_host_of(pid: int) -> bool:
    """Whether the process ``pid`` has started its engine host."""
    for child in children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"workers.engine_host" in cmdline.read():
                    return True
        except OSError:  # gone meanwhile
            continue
    return False


def test_an_idle_workers_lost_stop_request_is_made_again(config):
    """RQ stops an idle worker by raising StopRequested from its signal handler, and a log call
    under way when the signal lands swallows it. Here a stop request is made without that
    exception, as if swallowed: the worker stops all the same, a moment later."""
    code = (
        "import threading, time\n"
        "from app.core.services import connect\n"
        "from app.core.settings import Settings\n"
        "from workers.worker import build_worker\n"
        "settings = Settings.load()\n"
        "worker = build_worker(connect(settings), settings)\n"
        "threading.Timer(2, worker.handle_warm_shutdown_request).start()  # the request; no exception\n"
        "started = time.monotonic()\n"
        "worker.work(logging_level='WARNING')\n"
        "print(f'left after {time.monotonic() - started:.1f} s')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "left after" in result.stdout, result.stderr[-2000:]
    assert "the stop request was lost in RQ's loop; stopping again" in result.stdout + result.stderr


@pytest.mark.parametrize("scheduler", ["drops its first SIGTERM", "ignores SIGTERM"])
def test_a_stopping_worker_does_not_wait_forever_for_its_scheduler(config, redis, tmp_path, scheduler):
    """RQ's scheduler process is forked by the worker, and a SIGTERM that reaches it before it ran
    is dropped (CPython clears pending signals after ``fork``): RQ sent one and waited forever, so
    a worker stopped just as it started never unregistered. Here the scheduler drops its first
    SIGTERM, or every one: the worker sends the signal again, or kills it after a few seconds; either
    way it leaves and unregisters (a wait longer than the check for a lost stop request included)."""
    ready = tmp_path / "scheduler-ready"
    ignored = 1 if scheduler == "drops its first SIGTERM" else 1000
    code = (
        "import faulthandler, os, pathlib, signal, threading, time\n"
        # Should it hang (seen once in CI-like runs, not reproduced in 24 runs under load): every thread's
        # stack on stderr, which the assertion below shows, before the 60 s timeout.
        "faulthandler.dump_traceback_later(50, exit=True)\n"
        "from rq.scheduler import RQScheduler\n"
        "from app.core.services import connect\n"
        "from app.core.settings import Settings\n"
        "from workers.worker import build_worker\n"
        "install, request_stop, seen = RQScheduler._install_signal_handlers, RQScheduler.request_stop, []\n"
        "def installed(self):\n"
        "    install(self)\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "def dropping(self, signum=None, frame=None):\n"
        "    seen.append(signum)\n"
        f"    if len(seen) > {ignored}:\n"
        "        request_stop(self, signum, frame)\n"
        "RQScheduler._install_signal_handlers, RQScheduler.request_stop = installed, dropping\n"
        # RQ starts its scheduler before it installs the worker's signal handlers: wait for both.
        "def stop_once_the_scheduler_runs():\n"
        f"    while not (os.path.exists({str(ready)!r}) and signal.getsignal(signal.SIGTERM) == worker.request_stop):\n"
        "        time.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "settings = Settings.load()\n"
        # A queue of its own: the scheduler locks of the usual queues may be held by another test's worker.
        f"worker = build_worker(connect(settings), settings, [{'scheduler-' + tmp_path.name!r}])\n"
        "threading.Thread(target=stop_once_the_scheduler_runs, daemon=True).start()\n"
        # In a finally: should the stop request be swallowed where it lands (a log call under way),
        # the worker stops it again the cold way, and RQ's SystemExit leaves ``work`` after teardown.
        "try:\n"
        "    worker.work(logging_level='WARNING', with_scheduler=True)\n"
        "finally:\n"
        "    print('scheduler alive:', worker.scheduler._process.is_alive(), flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scheduler alive: False" in result.stdout
    assert Worker.count(connection=redis) == 0
    output = result.stdout + result.stderr
    assert ("did not stop in 3 s; killing it" in output) == (scheduler == "ignores SIGTERM"), output[-2000:]


def test_a_killed_workers_scheduler_process_stops_and_releases_its_locks(config, redis):
    """RQ stops its scheduler process only from the worker's teardown: after a SIGKILL of the worker
    it ran on, for good, holding its queues' scheduler locks. Now it stops by itself within moments."""
    from tests.helpers import ytcaption_command

    process = subprocess.Popen([ytcaption_command(), "worker", "express"])
    try:
        wait_for(lambda: redis.get("rq:scheduler-lock:express") or process.poll() is not None, timeout=120,
                 message="the worker's scheduler to take its lock")
        # RQ's scheduler process: a fork of the worker (the same command line), unlike the engine host.
        wait_for(lambda: _forks_of(process.pid) or process.poll() is not None, timeout=30,
                 message="the scheduler process")
        assert process.poll() is None
        scheduler = _forks_of(process.pid)
    finally:
        process.kill()
        process.wait()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in scheduler), timeout=30,
             message="the scheduler process to stop")
    assert redis.get("rq:scheduler-lock:express") is None  # released, not left to expire


def test_a_full_redis_refuses_submits_with_a_503_and_still_answers_reads(tmp_path, config, media_server):
    """maxmemory reached with noeviction: a submit is refused for now (503, Retry-After, nothing
    accepted), while a job's status, which needs no write, is still read (its request not counted)."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persistent=False)
    server.start()
    try:
        connection = Redis.from_url(server.url)
        client = create_app({**config, "REDIS_URL": server.url}).test_client()
        headers = user_headers(client)
        job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        connection.config_set("maxmemory", max(1, connection.info("memory")["used_memory"] // 2))  # full
        refused = submit(client, headers, media_server.url("fox.m4a"))
        assert refused.status_code == 503 and refused.headers["Retry-After"], refused.get_json()
        assert refused.get_json()["error"] == "service_unavailable"
        assert status(client, headers, job_id)["status"] == "pending"
        assert Queue("express", connection=connection).count == 1  # the refused one is nowhere
        connection.config_set("maxmemory", 0)  # room again
        assert submit(client, headers, media_server.url("fox.m4a")).status_code == 202
    finally:
        server.stop()
