"""What happens once when a client's job ends for good, wherever it ends.

A job ends in RQ's callbacks (``workers.callbacks``: completed, failed for good, stopped on a cancel
request), in the API (``app.core.jobs.cancel_job``: cancelled while it waited), or with the work it
followed (``app.core.sharing``). Each of those places calls ``job_ended`` once, and everything that
follows a job's end hangs off it, in this order: its followers end alike (or take the work over),
its uploaded audio is deleted, its live events get their final event, its webhook and its batch's
are queued (``app.core.webhooks``).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.job import Job

from app.core import events, sharing, uploads, webhooks
from app.core.settings import Settings


def job_ended(connection: Redis, job: Job, status: str, settings: Settings, **details: Any) -> None:
    """``job`` ended for good: ``status`` is ``completed`` (``result=``), ``failed`` (``error=``) or ``cancelled``."""
    sharing.leader_ended(connection, job, status, details, settings)
    uploads.discard(connection, job.id)  # after the followers: one that takes the work over needs the audio
    events.publish(connection, job.id, status, {"status": status, **details})
    webhooks.job_ended(connection, job, status, details)
