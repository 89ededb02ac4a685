"""The periodic job functions. Each returns a report of what it did (kept as the job's result)."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta, timezone

from redis import Redis
from rq import Queue, get_current_job
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    clean_registries,
)

from app.core.jobs import QUEUE_NAMES
from app.core.quota import period_of
from app.core.settings import Settings
from workers import context

USAGE_REPORT = "ytcaption:usage-report:{}"


def cleanup_old_results() -> dict[str, int]:
    """Remove expired job records, orphaned temporary downloads and transcripts past their TTL."""
    connection = get_current_job().connection
    settings = context.settings()
    return {
        "job_records": remove_expired_job_records(connection),
        "temp_dirs": remove_orphaned_downloads(connection, settings),
        "transcripts": remove_old_transcripts(connection, settings),
    }


def remove_expired_job_records(connection: Redis) -> int:
    """Registry entries past their TTL or whose job record has expired (RQ removes them lazily)."""
    registries = [registry_class(name, connection=connection) for name in QUEUE_NAMES
                  for registry_class in (FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry)]
    def size() -> int:  # raw sizes: RQ's ``count`` cleans the registry before counting
        return sum(connection.zcard(registry.key) for registry in registries)

    before = size()
    for name in QUEUE_NAMES:
        clean_registries(Queue(name, connection=connection))
    for registry in registries:
        for job_id in registry.get_job_ids(cleanup=False):
            if not connection.exists(Job.key_for(job_id)):
                connection.zrem(registry.key, job_id)
    return before - size()


def remove_orphaned_downloads(connection: Redis, settings: Settings) -> int:
    """Job directories in this machine's ``WORK_DIR`` older than ``WORK_DIR_MAX_AGE`` whose job is
    not running (a worker killed with SIGKILL cannot remove its own)."""
    if not settings.work_dir.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - settings.work_dir_max_age
    for directory in settings.work_dir.iterdir():
        if not directory.is_dir() or directory.stat().st_mtime > cutoff:
            continue
        try:
            running = Job.fetch(directory.name, connection=connection).get_status() == JobStatus.STARTED
        except Exception:  # no such job, or not a job id at all: nothing runs there
            running = False
        if not running:
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed


def remove_old_transcripts(connection: Redis, settings: Settings) -> int:
    """Transcripts older than ``TRANSCRIPT_TTL`` that still exist (e.g. after the TTL was lowered)."""
    removed = 0
    cutoff = time.time() - settings.transcript_ttl
    for key in connection.scan_iter("ytcaption:transcript:*", count=500):
        raw = connection.get(key)
        if raw and json.loads(raw).get("created_at", 0) < cutoff:
            connection.delete(key)
            removed += 1
    return removed


def reset_monthly_quotas() -> dict:
    """Close last month: record each user's usage in a report.

    Usage is counted per calendar month under its own key, so the new month already starts at
    zero without this job: running it twice writes the same report, missing it loses nothing.
    """
    connection = get_current_job().connection
    last_month = period_of(datetime.now(timezone.utc).replace(day=1) - timedelta(days=1))
    usage = {}
    for key in connection.scan_iter(f"ytcaption:usage:*:{last_month}", count=500):
        user_id = key.decode().split(":")[2]
        usage[user_id] = int(connection.get(key) or 0)
    report = USAGE_REPORT.format(last_month)
    with connection.pipeline() as pipe:
        pipe.delete(report)
        if usage:
            pipe.hset(report, mapping=usage)
        pipe.execute()
    return {"period": last_month, "users": len(usage), "jobs": sum(usage.values())}
