"""Periodic jobs: registered idempotently in UTC, and each run for real against seeded data."""

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq_scheduler import Scheduler

from app.core.quota import period_of
from scheduler.jobs import USAGE_REPORT
from scheduler.registration import PERIODIC_JOBS, QUEUE, build_scheduler, register
from tests.helpers import stop_process, wait_for, ytcaption_command


def run_now(redis, run_worker, func: str):
    """Enqueue a periodic job function on its queue and let a real worker run it."""
    job = Queue(QUEUE, connection=redis).enqueue(func)
    run_worker([QUEUE])
    job = Job.fetch(job.id, connection=redis)
    assert job.get_status() == "finished", job.latest_result().exc_string
    return job.return_value()


def test_registration_is_idempotent(redis):
    scheduler = build_scheduler(redis)
    for _ in range(3):
        register(scheduler)
    assert sorted(job.id for job in scheduler.get_jobs()) == sorted(job.id for job in PERIODIC_JOBS)


def test_cron_times_are_utc_whatever_the_machines_timezone(config, redis):
    """`ytcaption scheduler` started three times under TZ=America/Sao_Paulo (UTC-3)."""
    env = {**os.environ, "TZ": "America/Sao_Paulo"}

    def running() -> bool:
        """rq-scheduler is running (it registers its birth once the jobs are registered)."""
        return any(redis.hexists(key, "birth") and not redis.hexists(key, "death")
                   for key in redis.scan_iter(Scheduler.redis_scheduler_namespace_prefix + "*"))

    for _ in range(3):
        process = subprocess.Popen([ytcaption_command(), "scheduler"], env=env)
        try:
            wait_for(running, timeout=30, message="the scheduler to register its jobs and run")
        finally:
            stop_process(process)
        # A scheduler stopped before it handles signals leaves its record to expire by itself (10 s): go
        # on without waiting, so that the next one is seen registering.
        for key in redis.scan_iter(Scheduler.redis_scheduler_namespace_prefix + "*"):
            redis.delete(key)
    jobs = dict((job.id, when) for job, when in Scheduler(connection=redis).get_jobs(with_times=True))
    assert len(jobs) == 2
    cleanup = jobs["ytcaption-cleanup-old-results"].replace(tzinfo=timezone.utc)
    quotas = jobs["ytcaption-reset-monthly-quotas"].replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    assert (cleanup.hour, cleanup.minute) == (2, 0) and now < cleanup <= now + timedelta(days=1)
    assert (quotas.day, quotas.hour, quotas.minute) == (1, 0, 0) and now < quotas <= now + timedelta(days=32)


def test_rq_scheduler_enqueues_a_job_our_worker_can_run(redis, run_worker):
    """rq-scheduler has no serializer option: its jobs must run on ytcaption's workers."""
    scheduler = build_scheduler(redis)
    scheduler.enqueue_at(datetime.now(timezone.utc) - timedelta(seconds=1), "scheduler.jobs.reset_monthly_quotas")
    scheduler.run(burst=True)
    assert Queue(QUEUE, connection=redis).count == 1
    run_worker([QUEUE])
    assert Queue(QUEUE, connection=redis).finished_job_registry.count == 1


def test_cleanup_removes_what_expired_and_keeps_the_rest(redis, run_worker, settings, services):
    # Registry entries whose job records expired (result_ttl passed, the entry stayed).
    for registry in (FinishedJobRegistry("standard", connection=redis), FailedJobRegistry("express", connection=redis)):
        redis.zadd(registry.key, {"expired-job": time.time() + 3600})
    # Temp downloads: an old orphan, a recent one, an old one whose job is still running.
    settings.work_dir.mkdir(parents=True)
    old, recent = settings.work_dir / "orphan-job", settings.work_dir / "fresh-job"
    running_job = Queue("standard", connection=redis).enqueue("os.getcwd")
    running_job.set_status("started")
    running = settings.work_dir / running_job.id
    for directory in (old, recent, running):
        directory.mkdir()
        (directory / "media.webm").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    for directory in (old, running):
        os.utime(directory, (two_days_ago, two_days_ago))
    # Transcripts: one older than TRANSCRIPT_TTL without a Redis TTL, one recent.
    redis.set("ytcaption:transcript:ancient", json.dumps({"created_at": time.time() - 40 * 86400}))
    services.transcripts.save({"transcription_id": "recent", "created_at": time.time()})

    report = run_now(redis, run_worker, "scheduler.jobs.cleanup_old_results")

    assert report == {"job_records": 2, "temp_dirs": 1, "transcripts": 1}
    assert not old.exists() and recent.exists() and running.exists()
    assert not redis.exists("ytcaption:transcript:ancient") and services.transcripts.get("recent")
    assert FinishedJobRegistry("standard", connection=redis).count == 0


def test_monthly_quota_job_reports_last_month_and_can_run_twice(redis, run_worker, services):
    now = datetime.now(timezone.utc)
    last_month = period_of(now.replace(day=1) - timedelta(days=1))
    redis.set(f"ytcaption:usage:alice:{last_month}", 7)
    redis.set(f"ytcaption:usage:bob:{last_month}", 3)
    redis.set(f"ytcaption:usage:alice:{period_of(now)}", 2)
    first = run_now(redis, run_worker, "scheduler.jobs.reset_monthly_quotas")
    second = run_now(redis, run_worker, "scheduler.jobs.reset_monthly_quotas")
    assert first == second == {"period": last_month, "users": 2, "jobs": 10}
    assert redis.hgetall(USAGE_REPORT.format(last_month)) == {b"alice": b"7", b"bob": b"3"}
    assert redis.get(f"ytcaption:usage:alice:{period_of(now)}") == b"2"  # this month untouched
