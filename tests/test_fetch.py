"""No accepted job is lost: the reliable fetch, recovery of a gone worker's fetched jobs, the ledger
and its orphan sweeper (``app.core.reliability``, ``workers.fetch``), with a real Redis and real workers."""

import os
import signal
import threading
import time

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from app.core import reliability, stats
from app.core.jobs import QUEUE_NAMES
from app.core.redis_server import RedisServer, free_port
from app.core.webhooks import WEBHOOK_QUEUE
from tests.helpers import (
    descendants,
    start_worker,
    status,
    stop_process,
    submit,
    wait_for,
)
from tests.test_reliability import user_headers
from workers.fetch import FetchingQueue
from workers.worker import build_worker


def queue_keys():
    return [Queue.redis_queue_namespace_prefix + name for name in QUEUE_NAMES]


def queue_key(name: str) -> str:
    return Queue.redis_queue_namespace_prefix + name


def test_fetch_takes_the_first_job_of_the_first_non_empty_queue_into_the_workers_list(redis):
    for name in ("batch", "standard", "express", "standard"):
        redis.rpush(queue_key(name), f"{name}-{redis.llen(queue_key(name))}")
    taken = [reliability.fetch(redis, "w1", queue_keys())[1] for _ in range(4)]
    assert taken == ["express-0", "standard-0", "standard-1", "batch-0"]
    assert reliability.fetch(redis, "w1", queue_keys()) is None
    assert [j.decode() for j in redis.lrange(reliability.fetched_key("w1"), 0, -1)] == taken
    assert redis.smembers(reliability.FETCHERS) == {b"w1"}
    assert reliability.claim(redis, "w1", "standard-0")
    reliability.release(redis, "w1", "standard-0")
    assert not reliability.claim(redis, "w1", "standard-0")


def test_a_fetched_job_not_claimed_in_time_goes_back_and_its_worker_cannot_claim_it(redis):
    """A worker that froze (or died) between its fetch and its claim; a live one is left alone."""
    redis.set(Worker.redis_worker_namespace_prefix + "frozen", 1)  # its key has not expired yet
    queue = Queue("standard", connection=redis)
    job = queue.enqueue("builtins.len", "ab")
    assert reliability.fetch(redis, "frozen", queue_keys())[1] == job.id
    assert reliability.recover_fetched(redis) == []  # fetched a moment ago: its worker is claiming it
    assert reliability.recover_fetched(redis, grace=0) == [job.id]
    assert queue.get_job_ids() == [job.id]
    assert not reliability.claim(redis, "frozen", job.id)  # the frozen worker, back, does not run it


def test_a_claimed_job_goes_back_only_once_its_worker_is_gone_and_only_if_it_never_started(redis):
    queue = Queue("standard", connection=redis)
    waiting, running = queue.enqueue("builtins.len", "ab"), queue.enqueue("builtins.len", "cd")
    worker_key = Worker.redis_worker_namespace_prefix + "w1"
    redis.set(worker_key, 1)
    for job in (waiting, running):
        reliability.fetch(redis, "w1", queue_keys())
        assert reliability.claim(redis, "w1", job.id)
    redis.hset(running.key, "status", "started")  # its work horse started it
    assert reliability.recover_fetched(redis, grace=0) == []  # claimed by a live worker: its own
    redis.delete(worker_key)  # the worker's key expired: it is gone
    assert reliability.recover_fetched(redis, grace=0) == [waiting.id]  # the started one is RQ's to recover
    assert queue.get_job_ids() == [waiting.id]
    assert not redis.exists(reliability.fetched_key("w1")) and not redis.sismember(reliability.FETCHERS, "w1")


def test_a_job_fetched_by_a_worker_that_died_runs_at_the_front_of_its_queue_without_using_an_attempt(
        make_client, media_server, redis):
    """What a worker killed between the fetch and the start leaves (RQ's BLPOP would have lost it)."""
    client = make_client()
    headers = user_headers(client)
    first = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    second = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    assert reliability.fetch(redis, "gone-worker", queue_keys())[1] == first  # no rq:worker:gone-worker key
    worker = start_worker(redis)
    try:
        wait_for(lambda: status(client, headers, second)["status"] == "completed", timeout=120, message="the jobs")
        assert status(client, headers, first)["status"] == "completed"
    finally:
        stop_process(worker)
    first_job, second_job = (Job.fetch(job_id, connection=redis) for job_id in (first, second))
    assert first_job.started_at < second_job.started_at  # back at the front, not behind the second
    assert status(client, headers, first)["attempt"] == 1
    assert redis.hget(stats.RECOVERED, "worker_lost") == b"1"
    assert not redis.exists(reliability.fetched_key("gone-worker"))
    assert redis.zcard(reliability.LEDGER) == 0  # both ended


def test_the_sweeper_requeues_an_accepted_job_that_is_nowhere_for_a_minute(make_client, media_server, redis):
    client = make_client(METRICS_PUBLIC="true")
    headers = user_headers(client)
    lost, waiting = (submit(client, headers, media_server.url("fox.m4a"), cache=False).get_json()["job_id"]
                     for _ in range(2))
    queue = Queue("express", connection=redis)
    redis.lrem(queue.key, 0, lost)  # what the AOF of the issue showed: popped, then the worker died
    accepted = redis.zscore(reliability.LEDGER, lost)
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=accepted + 30) == []  # too young to look at
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=accepted + 61) == []  # first seen missing
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=accepted + 100) == []  # not yet 60 s missing
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=accepted + 122) == [lost]
    assert queue.get_job_ids() == [lost, waiting]  # at the front; the waiting one untouched
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=accepted + 300) == []  # found again: idempotent
    assert redis.hlen(reliability.MISSING) == 0

    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ytcaption_jobs_recovered_total{reason="orphan"} 1.0' in metrics


def test_the_sweeper_forgets_jobs_that_ended_or_expired(redis, make_client, media_server):
    client = make_client()
    headers = user_headers(client)
    ended, expired = (submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"] for _ in range(2))
    redis.hset(Job.key_for(ended), "status", "finished")
    redis.delete(Job.key_for(expired))
    assert reliability.sweep_orphans(redis, QUEUE_NAMES, now=time.time() + 61) == []
    assert redis.zcard(reliability.LEDGER) == 0


def test_a_job_is_counted_once_however_often_it_ends(redis):
    assert stats.record_completed(redis, "job1", "express", "finished", "transcribe_video", 2.0)
    assert not stats.record_completed(redis, "job1", "express", "finished", "transcribe_video", 2.0)
    assert stats.record_completed(redis, "job2", "express", "finished", "transcribe_video", None)
    assert redis.hget(stats.COMPLETED, "express|finished") == b"2"
    assert redis.hget(stats.DURATION.format("transcribe_video"), "count") == b"1"


def test_an_idle_worker_wakes_for_a_new_job_at_once_without_polling_redis(make_client, media_server, redis):
    client = make_client()
    headers = user_headers(client)
    worker = start_worker(redis)
    try:
        wait_for(lambda: Worker.all(connection=redis)[0].get_state() == "idle", message="the worker to be idle")
        redis.config_resetstat()
        window_start = time.monotonic()
        wait_for(lambda: time.monotonic() - window_start > 12, interval=0.5, message="an idle window")
        idle = time.monotonic() - window_start
        calls = {name: info["calls"] for name, info in redis.info("commandstats").items()}
        per_second = sum(calls.values()) / idle
        fetches = calls.get("cmdstat_lmove", 0) / (len(QUEUE_NAMES) + 1)  # a fetch tries each queue, webhooks too
        print(f"idle worker: {per_second:.2f} Redis commands/s in all, {fetches / idle:.2f} fetches/s; "
              f"RQ's scheduler polls every second: {calls}")
        # About two fetches per wait of up to 10 s, not one per second.
        assert fetches <= idle / 10 * 2 + 4, calls  # a worker looking every second: 12 or more

        submitted = time.time()
        job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
        wait_for(lambda: Job.fetch(job_id, connection=redis).started_at, timeout=30, message="the job to start")
        latency = Job.fetch(job_id, connection=redis).started_at.timestamp() - submitted
        print(f"idle worker: job started {latency:.2f} s after the submit")
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=60, message="the job")
    finally:
        stop_process(worker)


def test_a_worker_still_finds_jobs_where_redis_refuses_config(tmp_path, redis):
    """A managed Redis without CONFIG: the worker looks every second instead of being told."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persistent=False)
    server.start()
    try:
        connection = Redis.from_url(server.url)
        connection.execute_command("ACL", "SETUSER", "default", "-config")  # as some managed services do
        queue = FetchingQueue("standard", connection=connection, fetcher="w1")
        job = queue.enqueue("builtins.len", "ab")
        assert FetchingQueue.dequeue_any([queue], 1, connection=connection)[0].id == job.id
        later = time.monotonic()
        threading.Timer(0.3, lambda: queue.enqueue("builtins.len", "cd")).start()
        found, _ = FetchingQueue.dequeue_any([queue], 5, connection=connection)
        assert found.args == ("cd",) and time.monotonic() - later < 3
    finally:
        server.stop()


def test_a_frozen_worker_does_not_run_a_job_given_to_another_meanwhile(make_client, media_server, redis):
    """SIGSTOP a worker while it runs a job, until RQ finds the job abandoned and another worker
    runs it; after SIGCONT the frozen work horse walks away: one completion, one count."""
    client = make_client(JOB_RETRY_BASE="0")
    headers = user_headers(client)
    workers = [start_worker(redis)]
    pids = []
    try:
        workers.append(start_worker(redis, expect=2))  # both ready before the job: no race with a slow start
        job_id = submit(client, headers, media_server.url("lecture.webm", delay=0.3)).get_json()["job_id"]
        wait_for(lambda: status(client, headers, job_id)["stage"] == "downloading", timeout=60, message="download")
        running_on = Worker.find_by_key(Worker.redis_worker_namespace_prefix + Job.fetch(
            job_id, connection=redis).worker_name, connection=redis).pid
        frozen = next(worker for worker in workers if worker.pid == running_on)
        pids = [frozen.pid, *descendants(frozen.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: (body := status(client, headers, job_id))["status"] == "processing" and body["attempt"] == 2,
                 timeout=120, interval=0.5, message="the job to run on the other worker")
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        pids = []
        wait_for(lambda: status(client, headers, job_id)["status"] == "completed", timeout=120, message="the job")
        # The frozen worker's horse notices within a progress update, and ends without a word.
        started = Queue("express", connection=redis).started_job_registry.key
        wait_for(lambda: redis.zcard(started) == 0, timeout=30, message="no execution left in RQ's started registry")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        for worker in workers:
            stop_process(worker)
    body = status(client, headers, job_id)
    assert (body["status"], body["attempt"]) == ("completed", 2)
    assert redis.hget(stats.COMPLETED, "express|finished") == b"1"
    assert len(list(redis.scan_iter("ytcaption:transcript:*"))) == 1
    assert redis.zcard(reliability.LEDGER) == 0


def test_a_worker_serving_one_queue_does_not_take_jobs_waiting_in_another_for_orphans(
        make_client, media_server, redis, settings):
    client = make_client()
    _, key = client.application.extensions["ytcaption"].users.create("free@example.com", "free")
    job_id = submit(client, {"Authorization": f"Bearer {key}"}, media_server.url("fox.m4a")).get_json()["job_id"]
    redis.zadd(reliability.LEDGER, {job_id: time.time() - 600})  # accepted long ago,
    redis.hset(reliability.MISSING, job_id, time.time() - 600)  # and found missing before: the next sweep decides
    express_only = build_worker(redis, settings, ["express"])
    express_only.register_birth()
    express_only.run_maintenance_tasks()
    assert Queue("standard", connection=redis).get_job_ids() == [job_id]  # once, where it was
    assert not redis.hexists(reliability.MISSING, job_id)


def test_a_worker_whose_registration_was_lost_registers_again(config, redis):
    """What a failover to a replica that never had the worker's registration leaves."""
    worker = start_worker(redis)
    try:
        (registered,) = Worker.all(connection=redis)
        redis.delete(registered.key)
        redis.srem(Worker.redis_workers_keys, registered.key)
        wait_for(lambda: [w.name for w in Worker.all(connection=redis)] == [registered.name], timeout=60,
                 interval=0.5, message="the worker to register again")
        assert Worker.find_by_key(registered.key, connection=redis).queue_names() == [WEBHOOK_QUEUE, *QUEUE_NAMES]
    finally:
        stop_process(worker)


def test_a_queue_maintenance_lock_left_by_a_killed_worker_expires_in_half_a_minute(redis):
    """RQ's own lock lasts 15 minutes: a worker killed while cleaning a queue stopped the recovery of
    that queue's abandoned jobs for that long (seen in the kill storm)."""
    queue = FetchingQueue("express", connection=redis)
    assert queue.acquire_maintenance_lock() and not queue.acquire_maintenance_lock()
    assert 0 < redis.ttl(queue.registry_cleaning_key) <= 30


def test_a_job_whose_record_is_gone_is_taken_off_the_fetched_list_and_the_next_one_fetched(redis):
    queue = FetchingQueue("standard", connection=redis, fetcher="w1")
    gone, waiting = queue.enqueue("builtins.len", "ab"), queue.enqueue("builtins.len", "cd")
    redis.delete(gone.key)  # expired while it waited
    job, _ = FetchingQueue.dequeue_any([queue], None, connection=redis)
    assert job.id == waiting.id
    assert [j.decode() for j in redis.lrange(reliability.fetched_key("w1"), 0, -1)] == [waiting.id]
