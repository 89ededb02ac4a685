"""`ytcaption worker --no-fork`: in-process workers under a supervisor, with the guarantees of
the forking worker (crash, timeout, cancel, shutdown, recycling), checked with real processes.
The SIGTERM scenarios run against both modes in ``tests/test_reliability.py``."""

import os
import signal
import subprocess
import sys
import time

from rq import Queue, Worker
from rq.job import Job, JobStatus

from app.jobs import cancel_job
from tests.helpers import children, start_worker, status, stop_process, submit, wait_for
from tests.test_reliability import start_long_job, user_headers


def start_pool(redis, *args: str, processes: int = 1):
    return start_worker(redis, "--no-fork", "--processes", str(processes), *args, expect=processes)


def process_running(redis, job_id: str) -> int:
    """The pid of the worker process that runs ``job_id`` (as RQ recorded it)."""
    name = wait_for(lambda: Job.fetch(job_id, connection=redis).worker_name, message="the job's worker")
    return Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=redis).pid


def worker_processes(pool_pid: int) -> list[int]:
    """The supervisor's worker processes (not the RQ scheduler process it also runs)."""
    def command(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read()
        except OSError:
            return b""
    return [pid for pid in children(pool_pid) if b"workers.pool" in command(pid)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_jobs_run_inside_worker_processes_that_hold_the_model(make_client, media_server, redis):
    client = make_client()
    headers = user_headers(client)
    pool = start_pool(redis, processes=2)
    try:
        job_ids = [submit(client, headers, media_server.url(name)).get_json()["job_id"]
                   for name in ("fox.m4a", "queue.webm", "fox.m4a")]
        for job_id in job_ids:
            wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=90, interval=0.5,
                 message="done")
        workers = worker_processes(pool.pid)
        assert len(workers) == 2
        registered = {worker.pid for worker in Worker.all(connection=redis)}
        assert registered == set(workers)  # the jobs ran in these processes: nothing forked per job
    finally:
        assert stop_process(pool) == 0
    for job_id in job_ids:
        result = status(client, headers, job_id)["result"]
        assert result["timings"]["model_load"] == 0.0, result["timings"]
    transcript_id = status(client, headers, job_ids[0])["result"]["transcription_id"]
    assert "brown fox" in client.get(f"/api/v1/transcriptions/{transcript_id}?format=txt", headers=headers).text.lower()
    assert Worker.count(connection=redis) == 0  # every process unregistered on its way out


def test_a_worker_process_killed_mid_job_is_replaced_and_its_job_retried(make_client, media_server, redis):
    client = make_client(JOB_RETRY_BASE="1")
    headers = user_headers(client)
    pool = start_pool(redis)
    try:
        job_id = start_long_job(client, headers, media_server, delay=0.3)
        victim = process_running(redis, job_id)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: status(client, headers, job_id)["attempt"] == 2, timeout=30, message="a second attempt")
        print(f"worker process killed: job on its second attempt after {time.monotonic() - killed_at:.1f} s")
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=90, interval=0.5,
                 message="done")
        assert victim not in worker_processes(pool.pid) and len(worker_processes(pool.pid)) == 1
    finally:
        stop_process(pool)
    assert len(list(redis.scan_iter("ytcaption:transcript:*"))) == 1
    assert {worker.pid for worker in Worker.all(connection=redis)} == set()


def test_a_cancelled_job_stops_at_once_and_its_process_lives_on(make_client, media_server, redis):
    client = make_client()
    headers = user_headers(client)
    pool = start_pool(redis)
    try:
        job_id = start_long_job(client, headers, media_server, delay=0.3)
        worker = process_running(redis, job_id)
        asked = time.monotonic()
        assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 202
        wait_for(lambda: status(client, headers, job_id)["status"] == "cancelled", timeout=10, message="cancel")
        print(f"cancelled in-process {time.monotonic() - asked:.2f} s after the request")
        next_job = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        wait_for(lambda: status(client, headers, next_job)["status"] == "completed", timeout=60, message="next job")
        assert worker_processes(pool.pid) == [worker]  # the same process, still holding the model
    finally:
        stop_process(pool)
    assert status(client, headers, job_id)["stage"] == "cancelled"


def test_a_job_stuck_in_native_code_is_killed_when_cancelled(config, redis):
    pool = start_pool(redis)
    try:
        job = Queue("standard", connection=redis).enqueue("tests.job_functions.stuck_in_native_code", 120)
        victim = process_running(redis, job.id)
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, message="the job to start")
        asked = time.monotonic()
        assert cancel_job(redis, job) == "processing"
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, timeout=30, message="the stop")
        print(f"stuck job stopped {time.monotonic() - asked:.1f} s after the cancel (by killing its process)")
        assert not alive(victim)
        wait_for(lambda: len(worker_processes(pool.pid)) == 1 and Worker.count(connection=redis) == 1, timeout=60,
                 message="a new worker process")
    finally:
        stop_process(pool)


def test_the_supervisor_kills_a_job_stuck_past_its_timeout(config, redis):
    code = ("import sys; from app.services import connect; from app.settings import Settings; "
            "from workers.pool import Pool; s = Settings.load(); "
            "sys.exit(Pool(connect(s), s, ['standard'], kill_slack=1).run())")
    pool = subprocess.Popen([sys.executable, "-c", code])
    try:
        job = Queue("standard", connection=redis).enqueue("tests.job_functions.stuck_in_native_code", 120,
                                                          job_timeout=2)
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, timeout=60, message="the job to start")
        started = time.monotonic()
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=30, message="the kill")
        print(f"stuck job failed {time.monotonic() - started:.1f} s after it started (timeout 2 s + slack 1 s)")
    finally:
        stop_process(pool)
    assert job.get_meta(refresh=True)["error"]["type"] == "job_timeout"


def test_a_job_past_its_timeout_is_stopped_in_process(make_client, media_server, redis):
    client = make_client(JOB_TIMEOUT_FLOOR="2")
    headers = user_headers(client)
    pool = start_pool(redis)
    try:
        worker = worker_processes(pool.pid)
        job_id = submit(client, headers, media_server.url("lecture.webm", delay=1)).get_json()["job_id"]
        wait_for(lambda: status(client, headers, job_id)["status"] == "failed", timeout=30, message="the timeout")
        assert worker_processes(pool.pid) == worker  # RQ's alarm stopped it: no process was killed
    finally:
        stop_process(pool)
    body = status(client, headers, job_id)
    assert (body["error"]["type"], body["attempt"]) == ("job_timeout", 1)


def test_a_worker_process_is_recycled_after_engine_max_jobs(make_client, media_server, redis):
    client = make_client(ENGINE_MAX_JOBS="1")
    headers = user_headers(client)
    pool = start_pool(redis)
    try:
        first = worker_processes(pool.pid)
        job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=60, interval=0.5,
                 message="done")
        wait_for(lambda: (now := worker_processes(pool.pid)) and now != first and Worker.count(connection=redis) == 1,
                 timeout=60, message="a fresh worker process")
        job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=60, interval=0.5,
                 message="done")
    finally:
        stop_process(pool)


def test_worker_processes_finish_their_job_and_exit_when_the_supervisor_is_killed(make_client, media_server, redis):
    client = make_client()
    headers = user_headers(client)
    pool = start_pool(redis)
    worker = worker_processes(pool.pid)[0]
    job_id = submit(client, headers, media_server.url("queue.webm", delay=0.1)).get_json()["job_id"]
    wait_for(lambda: status(client, headers, job_id)["status"] == "processing", timeout=60, message="start")
    pool.kill()
    pool.wait()
    wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=60, interval=0.5,
             message="the job to finish")
    wait_for(lambda: not alive(worker), timeout=30, message="the orphaned worker process to exit")
    assert Worker.count(connection=redis) == 0


def test_the_supervisor_shares_the_cores_among_its_processes_when_threads_are_auto(config, redis):
    from app.settings import Settings
    from workers.pool import Pool

    cores = len(os.sched_getaffinity(0))
    auto = Pool(redis, Settings.load({"WHISPER_CPU_THREADS": "0"}), processes=2)
    assert auto.child_environment()["WHISPER_CPU_THREADS"] == str(max(1, cores // 2))
    fixed = Pool(redis, Settings.load({"WHISPER_CPU_THREADS": "3"}), processes=2)
    assert fixed.child_environment().get("WHISPER_CPU_THREADS") == os.environ.get("WHISPER_CPU_THREADS")
