"""Transcription jobs as the API sees them: enqueue by import path, look up, describe, cancel.

The API never imports ``workers``: it names the job function by its import path, so the API
process stays free of the ML stack. Rules that keep the job record consistent:

- ``job.meta`` is written by the API only at enqueue time, afterwards only by the job itself
  (RQ writes meta as one blob, so two writers would overwrite each other);
- a cancel request is therefore its own key, ``ytcaption:cancel:<job_id>``, which the job polls.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Callback, Queue
from rq.command import send_stop_job_command
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.utils import now, utcformat

from app.core import endings, schemas, sharing, uploads, webhooks
from app.core.errors import (
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    JobAlreadyFinished,
    NotFound,
    UnexpectedJobError,
)
from app.core.notifications import wait_until
from app.core.quota import Quota, QuotaLedger, refund
from app.core.reliability import accept
from app.core.settings import Settings
from app.core.stats import record_completed, record_submitted, task_name
from app.core.transcripts import TranscriptStore
from app.core.users import User
from app.core.validation import TranscriptionRequest

#: Queue names in priority order: workers listen to them in this order.
QUEUE_NAMES = ("express", "standard", "batch")
TRANSCRIBE_VIDEO = "workers.jobs.transcribe_video"
#: RQ calls these back when a job ends (``workers.callbacks``); named by import path, like the job.
CALLBACKS = {
    "on_success": Callback("workers.callbacks.job_succeeded"),
    "on_failure": Callback("workers.callbacks.job_failed"),
    "on_stopped": Callback("workers.callbacks.job_stopped"),
}

#: Seconds a client is asked to wait (``Retry-After``) before polling again a job that waits or runs:
#: it notices the job's end half a second late on average, at a tenth of the cost of polling every
#: 0.1 s (docs/api.md#poll-a-job has the measurement), within the free tier's 60 requests a minute.
POLL_INTERVAL = 1
_TIER_QUEUE = {"free": "standard", "pro": "express", "enterprise": "express"}
_CANCEL = "ytcaption:cancel:{}"
_IDEMPOTENCY = "ytcaption:idempotency:{}:{}"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_PENDING = {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED,
            JobStatus.RATE_LIMITED, JobStatus.READY_TO_ENQUEUE}


def queue_for_tier(tier: str) -> str:
    return _TIER_QUEUE[tier]


def backoff_delays(retries: int, base: float, cap: float,
                   rand: Callable[[], float] = random.random) -> list[float]:
    """Delay before each retry: exponential from ``base``, capped at ``cap``, with "equal jitter".

    Retry ``n`` waits between half and all of ``min(cap, base * 2**n)``, so delays still grow
    (each range starts where the previous one ends) while retries of many jobs spread out.
    """
    delays = []
    for number in range(retries):
        ceiling = min(cap, base * 2**number)
        delays.append(round(ceiling / 2 + rand() * ceiling / 2, 2))
    return delays


def retry_policy(settings: Settings) -> Retry | None:
    """RQ's Retry with our backoff schedule (drawn once per job, at enqueue)."""
    if settings.job_max_retries == 0:
        return None
    return Retry(max=settings.job_max_retries,
                 interval=backoff_delays(settings.job_max_retries, settings.job_retry_base, settings.job_retry_max))


def make_queues(connection: Redis) -> dict[str, Queue]:
    return {name: Queue(name, connection=connection) for name in QUEUE_NAMES}


def enqueue_transcription(queue: Queue, request: TranscriptionRequest, user: User, settings: Settings,
                          quota_period: str, pipeline: Pipeline | None = None,
                          extra_meta: dict | None = None, work_key: str | None = None, flight: str | None = None,
                          queued: bool = True) -> Job:
    """Put a transcription job on ``queue``; only JSON-friendly arguments, never the API key.

    An uploaded file is stored beside the job, in ``pipeline`` (``app.core.uploads``); the job's
    arguments say only its name and size. With a ``flight`` key the job leads that work, or follows
    the job that leads it (``app.core.sharing.share``); not ``queued``, it is only saved (``deferred``).
    ``work_key``: the request's (``work_key_of``), if computed already.
    """
    kwargs = {
        "url": request.video.url if request.video else None,
        "video_id": request.video.video_id if request.video else None,
        "language": request.language,
        "model": request.model,
        "source": request.source,
        "user_id": user.id,
        "max_duration": settings.max_duration_for(user.tier),
    }
    if request.upload is not None:
        kwargs["upload"] = {"filename": request.upload.filename, "bytes": len(request.upload.data)}
    if request.options.as_job():
        kwargs["options"] = request.options.as_job()
    meta = {"progress": 0, "stage": "queued", "max_attempts": settings.job_max_retries + 1,
            "quota_period": quota_period, **(extra_meta or {})}
    meta["work_key"] = work_key or work_key_of(request)  # its end is remembered under it (app.core.sharing)
    if request.callback_url:
        meta["webhook"] = webhooks.target(request.callback_url, settings)
    job = queue.create_job(
        TRANSCRIBE_VIDEO,
        kwargs=kwargs,
        timeout=settings.job_timeout_floor,  # the job extends it once it knows the duration
        result_ttl=settings.result_ttl,
        failure_ttl=settings.result_ttl,
        retry=retry_policy(settings),
        description=f"transcribe {request.video.url if request.video else 'upload ' + request.upload.filename}",
        meta=meta,
        status=JobStatus.QUEUED if queued else JobStatus.DEFERRED,
        **CALLBACKS,
    )
    connection = pipeline if pipeline is not None else queue.connection
    if not queued:
        job.save(pipeline=connection)
        return job
    job = queue.enqueue_job(job, pipeline=pipeline)
    if request.upload is not None:
        uploads.put(connection, job.id, request.upload.data, settings.result_ttl)
    if flight is not None:
        sharing.share(connection, flight, job, uploads.key(job.id))
    return job


def work_key_of(request: TranscriptionRequest) -> str:
    """The request's work key (``app.core.sharing``)."""
    video = request.video
    return sharing.work_key(video and video.video_id, video and video.url, request.upload and request.upload.sha256,
                            request.model, request.language, request.source, request.options.as_job())


@dataclass(frozen=True)
class Submission:
    job: Job
    quota: Quota
    replayed: bool = False
    cached: bool = False


class SharedEnqueue:
    """Enqueue the job of ``request`` sharing its work (``app.core.sharing``; not with ``"cache": false``):
    completed at once from the result cache, or following the same work in flight, or leading it.

    ``look_up`` the cache first (``cost`` is then the quota the job costs), ``enqueue`` in the
    transaction that charges it, and call ``enqueued`` once that transaction is done.
    """

    def __init__(self, queue: Queue, request: TranscriptionRequest, user: User, settings: Settings,
                 extra_meta: dict | None = None) -> None:
        self.queue, self.request, self.user, self.settings = queue, request, user, settings
        self.extra_meta = extra_meta or {}
        self.work = work_key_of(request)
        self.limit = settings.max_duration_for(user.tier)
        self.flight = sharing.flight_key(self.work, queue.name, self.limit) if request.cache else None
        video = request.video
        cacheable = request.cache and sharing.cacheable(video and video.video_id, video and video.url)
        self.cache_key = self.work if cacheable else None
        self.transcripts = TranscriptStore(queue.connection, settings.transcript_ttl)
        self.hit: sharing.CacheHit | None = None
        self.result: dict | None = None

    def look_up(self) -> None:
        self.hit = sharing.cached(self.queue.connection, self.cache_key, self.limit, self.transcripts) \
            if self.cache_key else None

    @property
    def cost(self) -> int:
        return self.settings.quota_cache_hit_cost if self.hit else 1

    def enqueue(self, pipe: Pipeline, period: str) -> Job:
        """The commands that enqueue the job (or complete it from the cache), in ``pipe``."""
        meta = {**self.extra_meta, **({"cached": True} if self.hit else {})}
        job = enqueue_transcription(self.queue, self.request, self.user, self.settings, period, pipeline=pipe,
                                    extra_meta=meta, work_key=self.work, flight=self.flight, queued=self.hit is None)
        if self.hit is not None:
            self.result = sharing.finish_cached(pipe, job, self.hit, self.user.id, self.transcripts)
            record_completed(pipe, job.id, self.queue.name, "finished", task_name(TRANSCRIBE_VIDEO), None)
        else:
            accept(pipe, job.id)
        if self.cache_key:
            sharing.count(pipe, "hit" if self.hit else "miss")
        record_submitted(pipe, self.queue.name, task_name(TRANSCRIBE_VIDEO))
        return job

    def enqueued(self, job: Job) -> None:
        if self.result is not None:  # a cache hit ends at once, as any job: its final event (and what follows)
            endings.job_ended(self.queue.connection, job, "completed", self.settings, result=self.result)


def submit_transcription(queue: Queue, request: TranscriptionRequest, user: User, settings: Settings,
                         ledger: QuotaLedger, idempotency_key: str | None = None) -> Submission:
    """Charge the user's quota and enqueue, at most once per ``idempotency_key``; share the work.

    Work that can be shared (``app.core.sharing``; not with ``"cache": false``) is answered from the
    result cache (a job completed at once, charged ``QUOTA_CACHE_HIT_COST``), or else the job follows
    the same work in flight, or leads it.

    With a key, looking it up, charging the quota, claiming the key and enqueueing are one Redis
    transaction (WATCH of the key and of the user's usage, then MULTI/EXEC), so concurrent retries
    cannot both enqueue, and a replay, even one racing the first request for the last unit of
    quota, returns the first job: it is neither charged nor refused. The key is remembered per
    user for ``RESULT_TTL``.

    Raises:
        QuotaExceeded, InvalidIdempotencyKey, IdempotencyKeyReused (same key, other request).
    """
    connection = queue.connection
    shared = SharedEnqueue(queue, request, user, settings)
    if idempotency_key is None:
        shared.look_up()
        with ledger.charged(user, shared.cost) as quota, connection.pipeline() as pipe:
            job = shared.enqueue(pipe, quota.period)
            pipe.execute()
        shared.enqueued(job)
        return Submission(job, quota, cached=shared.hit is not None)

    if not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidIdempotencyKey()
    claim = _IDEMPOTENCY.format(user.id, hashlib.sha256(idempotency_key.encode()).hexdigest())
    fingerprint = _fingerprint(queue, request)
    with connection.pipeline() as pipe:
        while True:
            moment = datetime.now(timezone.utc)
            usage = ledger.usage_key(user, moment)
            pipe.watch(claim, usage)
            # One read of both: the claim and the charge of the request that made it are written together.
            existing, used = pipe.mget(claim, usage)
            if existing:
                record = json.loads(existing)
                if record["fingerprint"] != fingerprint:
                    pipe.reset()
                    raise IdempotencyKeyReused()
                try:
                    job = Job.fetch(record["job_id"], connection=connection)
                    pipe.reset()
                    return Submission(job, ledger.usage(user), replayed=True)
                except NoSuchJobError:
                    pass  # the job record expired: accept the request anew
            shared.look_up()
            pipe.multi()
            # QuotaExceeded from here resets pipe (the with block).
            quota = ledger.charge_in(pipe, user, used, moment, jobs=shared.cost)
            job = shared.enqueue(pipe, quota.period)
            pipe.set(claim, json.dumps({"job_id": job.id, "fingerprint": fingerprint}), ex=settings.result_ttl)
            try:
                pipe.execute()
            except WatchError:
                continue  # the key was claimed or the user charged meanwhile: look again (and replay its job)
            shared.enqueued(job)
            return Submission(job, quota, cached=shared.hit is not None)


def _fingerprint(queue: Queue, request: TranscriptionRequest) -> str:
    """What an idempotency key stands for: a request with the same key must be the same request."""
    # ``source`` only when not the default: a key claimed before sources existed keeps its fingerprint.
    fields = [request.video.url if request.video else None, request.language, request.model, queue.name]
    fields += [request.source] if request.source != "whisper" else []
    fields += [request.upload.sha256] if request.upload is not None else []
    fields += [request.options.as_job()] if request.options.as_job() else []
    fields += [{"callback_url": request.callback_url}] if request.callback_url else []
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def fetch_owned_job(connection: Redis, job_id: str, user: User) -> Job:
    """The job ``job_id`` if ``user`` submitted it (or is an admin); ``NotFound`` otherwise, the
    same answer as for a job that does not exist."""
    if not _JOB_ID.match(job_id):
        raise NotFound(f"No job {job_id!r}.")
    try:
        job = Job.fetch(job_id, connection=connection)
        owner = job.kwargs.get("user_id")
    except (NoSuchJobError, DeserializationError):
        raise NotFound(f"No job {job_id!r}.") from None
    if owner != user.id and not user.is_admin:
        raise NotFound(f"No job {job_id!r}.")
    return job


def is_cancel_requested(connection: Redis, job_id: str) -> bool:
    return bool(connection.exists(_CANCEL.format(job_id)))


def public_status(job: Job, status: JobStatus | None = None) -> str:
    """Map RQ's status to the API's: pending, processing, completed, failed, cancelled."""
    status = status or job.get_status()
    if status in _PENDING:
        return "pending"
    if status == JobStatus.STARTED:
        return "processing"
    if status == JobStatus.FINISHED:
        return "completed"
    if status in (JobStatus.STOPPED, JobStatus.CANCELED):
        return "cancelled"
    if status == JobStatus.FAILED and (job.meta.get("error") or {}).get("type") == "cancelled":
        return "cancelled"
    return "failed"


def describe_job(job: Job) -> schemas.JobStatus:
    """The status document of ``GET /status/<job_id>``."""
    # The status read with the rest of the record: a fresh one could say finished beside a stale ended_at.
    rq_status = job.get_status(refresh=False)
    status = public_status(job, rq_status)
    meta = job.meta
    kwargs = job.kwargs
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": status,
        "stage": meta.get("stage", "queued"),
        "progress": meta.get("progress", 0),
        "queue": job.origin,
        "youtube_url": kwargs.get("url"),
        "video_id": kwargs.get("video_id"),
        **({"filename": kwargs["upload"]["filename"]} if kwargs.get("upload") else {}),
        "language": kwargs.get("language") or "auto",
        "model": kwargs.get("model"),
        "source": kwargs.get("source", "whisper"),  # jobs enqueued before sources existed
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
    }
    # The attempt running now, or the next one while waiting for it (the last one failed: "error"
    # is still in meta until the next one starts), or the last one.
    attempt = meta.get("attempt", 1)
    body["attempt"] = attempt + 1 if status == "pending" and "error" in meta else attempt
    body["max_attempts"] = meta.get("max_attempts", 1)
    # While waiting for a retry the failed attempt's error is still "error"; a new attempt
    # moves it to "last_error".
    last_error = meta.get("error") or meta.get("last_error")
    if status in ("pending", "processing") and last_error:
        body["last_error"] = last_error
    if rq_status == JobStatus.SCHEDULED:
        try:
            scheduled = Queue(job.origin, connection=job.connection).scheduled_job_registry.get_scheduled_time(job)
            body.update(stage="waiting_retry", progress=0, next_retry_at=scheduled)
        except NoSuchJobError:  # the scheduler put it back on its queue a moment ago
            body.update(stage="queued", progress=0, position=job.get_position())
    elif status == "pending":
        # Queued again after a failed attempt, meta still holds that attempt's last stage and progress.
        body.update(stage="queued", progress=0, position=job.get_position())
    elif status == "processing" and is_cancel_requested(job.connection, job.id):
        body["stage"] = "cancelling"
    elif status == "completed":
        body["progress"] = 100
        body["stage"] = "completed"
        body["result"] = job.return_value()
    elif status == "cancelled":
        body["stage"] = "cancelled"
    elif status == "failed":
        body["stage"] = "failed"
        body["error"] = _failure(job)
    if rq_status == JobStatus.DEFERRED:  # a follower: the work it follows is its state
        sharing.describe_follower(job.connection, job, body, describe_job)
    if meta.get("cached"):
        body["cached"] = True
    if (webhook := webhooks.describe(job)) is not None:
        body["webhook"] = webhook
    return schemas.JobStatus.model_validate(body)


#: RQ's statuses of a job that has ended for good (a failed attempt that will be retried is scheduled or queued).
_ENDED = {JobStatus.FINISHED.value, JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value}


def wait_for_end(connection: Redis, job: Job, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``job`` to end; say whether it did.

    Woken by Redis each time the job's record changes (keyspace notifications,
    ``app.core.notifications``), not by polling: under gunicorn's gevent workers the wait holds a
    greenlet and a Redis connection, not a process.
    """
    def ended() -> bool:
        status = connection.hget(job.key, "status")
        return status is None or status.decode() in _ENDED  # None: the record is gone (expired, deleted)

    return wait_until(connection, [job.key], ended, timeout)


def poll_again(status: schemas.JobStatus) -> int | None:
    """Seconds after which a job that has not ended is worth asking about again: the status answer's
    ``Retry-After`` (docs/api.md). None once the job ended.

    ``POLL_INTERVAL`` while it waits in its queue or runs; while it waits for a retry, the seconds
    until the retry starts (nothing changes before).
    """
    if status.status not in ("pending", "processing"):
        return None
    if status.next_retry_at is not None:
        return max(POLL_INTERVAL, math.ceil((status.next_retry_at - datetime.now(timezone.utc)).total_seconds()))
    return POLL_INTERVAL


def cancel_job(connection: Redis, job: Job, settings: Settings) -> str:
    """Cancel ``job``: a queued job never runs, a running one is stopped.

    Returns the job's public status after the request: ``cancelled``, or ``processing``
    while a running job is being stopped. Cancelling twice is harmless.

    Raises:
        JobAlreadyFinished: the job already completed or failed.
    """
    status = public_status(job)
    if status == "cancelled":
        return status
    if job.get_status(refresh=False) == JobStatus.DEFERRED:  # a follower (app.core.sharing)
        if sharing.cancel_follower(connection, job):  # the others' work goes on
            _cancel_waiting(connection, job, settings)
            return "cancelled"
        job.refresh()  # it was given the work (queued) or ended with it a moment ago
        status = public_status(job)
    if status in ("completed", "failed"):
        raise JobAlreadyFinished(f"Job {job.id} has already {'completed' if status == 'completed' else 'failed'}.")

    # The flag first: a worker that dequeues the job from now on sees it before doing any work.
    connection.set(_CANCEL.format(job.id), 1, ex=max(job.timeout or 0, 86400))
    queue = Queue(job.origin, connection=connection)
    # Taken off the queue list, or off the retry schedule, atomically: no worker can have it.
    waiting = status == "pending" and (connection.lrem(queue.key, 0, job.id)
                                       or connection.zrem(queue.scheduled_job_registry.key, job.id))
    if waiting:
        _cancel_waiting(connection, job, settings)
        return "cancelled"
    try:
        send_stop_job_command(connection, job.id)
    except InvalidJobOperation:
        pass  # dequeued but not yet started: the job sees the flag when it starts
    return "processing"


def _cancel_waiting(connection: Redis, job: Job, settings: Settings) -> None:
    """Record the end of ``job``, cancelled before it ran (it is in no queue any more)."""
    connection.hset(job.key, "ended_at", utcformat(now()))  # not the end of a failed attempt before it
    job.cancel()
    endings.job_ended(connection, job, "cancelled", settings)
    refund(connection, job)  # it never ran to the end (or waited for a retry): its quota unit comes back
    record_completed(connection, job.id, job.origin, "cancelled", task_name(job.func_name), None)


def _failure(job: Job) -> dict[str, str]:
    # The job, or its worker's callbacks, always record why it failed; this is for a job run by
    # something else (an ``rq worker`` without ytcaption's callbacks, say).
    return job.meta.get("error") or {
        "type": UnexpectedJobError.code,
        "message": "The job failed outside its own code; the worker's log has the details."}
