"""Register the periodic jobs with rq-scheduler and run it: ``ytcaption scheduler``.

Two traps of rq-scheduler 0.14, handled here:
- its cron computes the next run from the machine's *local* clock, even with
  ``use_local_timezone=False``; so this process runs in UTC (``TZ=UTC``), whatever the machine;
- it has no serializer option: the jobs it enqueues use RQ's default serializer, which is what
  every ytcaption process uses too.
Registration is idempotent: each job has a stable id and is replaced, never added twice.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass

from redis import Redis
from rq_scheduler import Scheduler

log = logging.getLogger(__name__)

#: The queue periodic jobs go to: the lowest priority.
QUEUE = "batch"


@dataclass(frozen=True)
class PeriodicJob:
    id: str
    cron: str  # minute hour day-of-month month day-of-week, in UTC
    func: str
    description: str


PERIODIC_JOBS = (
    PeriodicJob("ytcaption-cleanup-old-results", "0 2 * * *", "scheduler.jobs.cleanup_old_results",
                "daily cleanup at 02:00 UTC"),
    PeriodicJob("ytcaption-reset-monthly-quotas", "0 0 1 * *", "scheduler.jobs.reset_monthly_quotas",
                "monthly quota report at 00:00 UTC on the 1st"),
)


def use_utc() -> None:
    """Make this process's local time UTC (rq-scheduler's cron reads the local clock)."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def register(scheduler: Scheduler) -> None:
    """(Re)register every periodic job under its stable id."""
    for job in PERIODIC_JOBS:
        if job.id in scheduler:
            scheduler.cancel(job.id)
        scheduler.cron(job.cron, func=job.func, id=job.id, queue_name=QUEUE, description=job.description,
                       result_ttl=30 * 86400, use_local_timezone=False)
        log.info("registered %s (%s): %s", job.id, job.cron, job.description)


def build_scheduler(connection: Redis, interval: int = 30) -> Scheduler:
    return Scheduler(queue_name=QUEUE, connection=connection, interval=interval)


def run(connection: Redis) -> None:
    use_utc()
    # rq-scheduler 0.14 calls crontab's next() without default_utc: in UTC anyway (use_utc).
    warnings.filterwarnings("ignore", "Version 0.22.0\\+ of crontab", FutureWarning)
    scheduler = build_scheduler(connection)
    register(scheduler)
    scheduler.run()
