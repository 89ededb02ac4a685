"""What happens once when a client's job ends for good, wherever it ends.

A job ends in RQ's callbacks (``workers.callbacks``: completed, failed for good, stopped on a cancel
request) or in the API (``app.core.jobs.cancel_job``: cancelled while it waited). Each of those
places calls ``job_ended`` once, and everything that follows a job's end hangs off it: the final
event of its live events (``app.core.events``), its webhook and its batch's (``app.core.webhooks``).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.job import Job

from app.core import events, webhooks


def job_ended(connection: Redis, job: Job, status: str, **details: Any) -> None:
    """``job`` ended for good: ``status`` is ``completed`` (``result=``), ``failed`` (``error=``) or ``cancelled``."""
    events.publish(connection, job.id, status, {"status": status, **details})
    webhooks.job_ended(connection, job, status, details)
