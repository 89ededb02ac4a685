"""What happens when a job ends, as RQ calls it back: metrics, quota refunds, temporary files, uploads,
and what follows a job's end for good (``app.core.endings``).

Every transcription job is enqueued with these callbacks, by import path (``app.core.jobs``):

- ``job_succeeded`` (in the work horse): counts the job as finished, with its run time;
- ``job_failed`` (in the work horse, or in a worker's maintenance for a job whose worker died):
  if the job will not be retried, counts it as failed (or cancelled) and gives its quota unit back;
- ``job_stopped`` (in the worker, after it stopped the job on a cancel request): counts it as
  cancelled and removes its temporary files.

A job that ends for good this way also leaves nothing of a long recording it was sharing with
other workers (``workers.pieces.abandon``), and announces its end (``app.core.endings``). The piece
jobs themselves have no callbacks.

``horse_killed`` is the worker's ``work_horse_killed_handler``: RQ calls it when a work horse died
without a word (killed, out of memory, or past its timeout), before RQ retries or fails the job.
"""

from __future__ import annotations

import os
import shutil
import signal
from types import TracebackType

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.utils import now

from app.core import endings
from app.core.errors import JobError, JobTimedOut, WorkerLost
from app.core.quota import refund
from app.core.reliability import taken_from
from app.core.stats import record_completed, record_recovered, task_name
from app.core.webhooks import DELIVER
from workers import context, pieces
from workers.jobs import job_work_dir


def job_succeeded(job: Job, connection: Redis, result: object) -> None:
    endings.job_ended(connection, job, "completed", context.settings(), result=result)
    record_completed(connection, job.id, job.origin, "finished", task_name(job.func_name), _run_time(job))


def job_failed(job: Job, connection: Redis, exc_type: type[BaseException], exc: BaseException,
               traceback: TracebackType | None) -> None:
    if isinstance(exc, AbandonedJobError):  # its worker died: nothing in the job could record why
        _record_error(job, WorkerLost("The worker running the job stopped answering (its machine or process "
                                      "died); the job is run again if it has attempts left."))
        if job.should_retry:
            record_recovered(connection, "abandoned")
    _count_if_ended(job, connection)


def job_stopped(job: Job, connection: Redis) -> None:
    shutil.rmtree(job_work_dir(context.settings().work_dir, job.id), ignore_errors=True)
    pieces.abandon(job)
    endings.job_ended(connection, job, "cancelled", context.settings())
    record_completed(connection, job.id, job.origin, "cancelled", task_name(job.func_name), _run_time(job))


def horse_killed(job: Job, pid: int, status: int, rusage: object) -> None:
    """The work horse died in the middle of the job: say why, remove its files, count it if final.

    Not if the job belongs to another run now (this worker was frozen, and its horse walked away).
    """
    if taken_from(job.connection, job, os.environ.get("RQ_WORKER_ID", "")):  # RQ sets it at each fork
        return
    shutil.rmtree(job_work_dir(context.settings().work_dir, job.id), ignore_errors=True)
    if job.func_name in (pieces.TRANSCRIBE_PIECE, DELIVER):
        return  # not a client's job (a piece's parent takes it over; RQ retries a delivery): nothing to count
    ran = _run_time(job) or 0.0
    if job.timeout and job.timeout > 0 and ran > job.timeout:
        # The worker killed a horse that did not stop at its timeout (stuck in native code).
        _record_error(job, JobTimedOut(f"The job ran longer than {job.timeout} s and was stopped."))
        job.retries_left = 0  # a timeout is permanent, as when the job stops itself at its timeout
    else:
        how = f" (killed by {signal.Signals(os.WTERMSIG(status)).name})" if status and os.WIFSIGNALED(status) else ""
        _record_error(job, WorkerLost(f"The process running the job died{how}, e.g. out of memory; the job is "
                                      f"run again if it has attempts left."))
    _count_if_ended(job, job.connection)


def _count_if_ended(job: Job, connection: Redis) -> None:
    """Count a failed job that will not run again; give its quota unit back unless it was cancelled."""
    if job.should_retry:
        return
    pieces.abandon(job)
    cancelled = (job.meta.get("error") or {}).get("type") == "cancelled"
    if cancelled:
        endings.job_ended(connection, job, "cancelled", context.settings())
    else:
        endings.job_ended(connection, job, "failed", context.settings(), error=job.meta.get("error"))
    record_completed(connection, job.id, job.origin, "cancelled" if cancelled else "failed",
                     task_name(job.func_name), _run_time(job))
    if not cancelled:
        refund(connection, job)


def _record_error(job: Job, error: JobError) -> None:
    # Re-read first: the work horse wrote stage, progress and attempt since this copy was fetched.
    job.get_meta(refresh=True)
    job.meta["error"] = {"type": error.code, "message": error.message}
    job.save_meta()


def _run_time(job: Job) -> float | None:
    return ((job.ended_at or now()) - job.started_at).total_seconds() if job.started_at else None
