"""Batches: several videos submitted at once, each its own job on the ``batch`` queue.

A failure stays with its video (and is retried alone); the batch record only lists the jobs (and
keeps the batch's ``callback_url``, ``app.core.webhooks``), and its status is computed from theirs
when asked.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job

from app.core import schemas, webhooks
from app.core.errors import BadRequest, NotFound, ValidationFailed
from app.core.jobs import SharedEnqueue, cancel_job, describe_job, public_status
from app.core.quota import QuotaLedger
from app.core.schemas import BatchBody
from app.core.settings import Settings
from app.core.users import User
from app.core.validation import TranscriptionRequest, check_callback, check_submit, parse_body

_BATCH = "ytcaption:batch:{}"
ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class BatchRequest:
    """A batch body that passed every rule: its videos, and where to announce its end."""

    videos: list[TranscriptionRequest]
    callback_url: str | None = None


def parse_batch(payload: Any, settings: Settings, user: User) -> BatchRequest:
    """Validate every video; the first problem refuses the whole batch, naming the video."""
    body = parse_body(BatchBody, payload)
    limit = settings.batch_limit_for(user.tier)
    if not 1 <= len(body.videos) <= limit:
        raise ValidationFailed(f"A batch holds 1 to {limit} videos for the {user.tier} tier; got {len(body.videos)}.")
    requests = []
    for index, video in enumerate(body.videos):
        try:
            requests.append(check_submit(video, settings))
        except BadRequest as exc:
            raise type(exc)(f"videos[{index}]: {exc.message}") from None
    return BatchRequest(requests, check_callback(body.callback_url, settings))


def submit_batch(queue: Queue, batch: BatchRequest, user: User, settings: Settings,
                 ledger: QuotaLedger) -> dict[str, Any]:
    """Charge one quota unit per video (all or none; a video from the result cache ``QUOTA_CACHE_HIT_COST``) and
    enqueue one job per video, atomically; each video's work is shared as a single submit's is."""
    batch_id = uuid.uuid4().hex
    requests = batch.videos
    videos = [SharedEnqueue(queue, request, user, settings,
                            extra_meta={"batch_id": batch_id, "batch_index": index})
              for index, request in enumerate(requests)]
    for video in videos:
        video.look_up()
    with ledger.charged(user, sum(video.cost for video in videos)) as quota, queue.connection.pipeline() as pipe:
        jobs = [video.enqueue(pipe, quota.period) for video in videos]
        record = {"batch_id": batch_id, "user_id": user.id, "job_ids": [job.id for job in jobs],
                  "created_at": time.time(),
                  **({"webhook": webhooks.target(batch.callback_url, settings)} if batch.callback_url else {})}
        pipe.set(_BATCH.format(batch_id), json.dumps(record), ex=settings.result_ttl)
        pipe.execute()
    for video, job in zip(videos, jobs):
        video.enqueued(job)
    return {"record": record, "quota": quota}


def read_batch(connection: Redis, batch_id: str) -> dict[str, Any] | None:
    """The batch's record (``batch_id``, ``user_id``, ``job_ids``, ``created_at``, ``webhook`` if any), or None."""
    raw = connection.get(_BATCH.format(batch_id)) if len(batch_id) <= 64 else None
    return json.loads(raw) if raw else None


def fetch_owned_batch(connection: Redis, batch_id: str, user: User) -> dict[str, Any]:
    record = read_batch(connection, batch_id)
    if record is None or (record["user_id"] != user.id and not user.is_admin):
        raise NotFound(f"No batch {batch_id!r}.")
    return record


def describe_batch(connection: Redis, record: dict[str, Any]) -> schemas.BatchStatus:
    """Overall status and progress, and each video's status (and result or error)."""
    videos: list[schemas.BatchVideo | schemas.ExpiredVideo] = []
    jobs = Job.fetch_many(record["job_ids"], connection=connection)  # one round trip for all
    for index, (job_id, job) in enumerate(zip(record["job_ids"], jobs)):
        if job is None:  # its record expired
            videos.append(schemas.ExpiredVideo(index=index, job_id=job_id, status="expired", progress=100))
            continue
        status = describe_job(job)
        videos.append(schemas.BatchVideo(index=index, **status.model_dump(exclude_unset=True)))
    counts = {status: sum(v.status == status for v in videos)
              for status in ("pending", "processing", "completed", "failed", "cancelled", "expired")}
    done = sum(counts[s] for s in (*ENDED, "expired"))
    if done == len(videos):
        status = "cancelled" if counts["cancelled"] == len(videos) else "completed"
    elif counts["pending"] == len(videos):
        status = "pending"
    else:
        status = "processing"
    progress = sum(100 if v.status in (*ENDED, "expired") else v.progress for v in videos) / len(videos)
    hook = record.get("webhook")
    return schemas.BatchStatus(batch_id=record["batch_id"], status=status, progress=round(progress),
                               total=len(videos), counts=schemas.BatchCounts(**counts), videos=videos,
                               **({"webhook": webhooks.delivery(connection, record["batch_id"], hook["url"])}
                                  if hook else {}))


def cancel_batch(connection: Redis, record: dict[str, Any], settings: Settings) -> int:
    """Cancel every video that has not ended; return how many were cancelled or are stopping."""
    cancelled = 0
    for job in Job.fetch_many(record["job_ids"], connection=connection):
        if job is not None and public_status(job) not in ENDED:
            cancel_job(connection, job, settings)
            cancelled += 1
    return cancelled
