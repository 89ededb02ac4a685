"""Signed webhooks: a job's end (a batch's, once all its videos ended) POSTed to the ``callback_url`` it came with.

What the API, the workers' callbacks and the worker's delivery job share:

- **The event**, made when the job ends for good (``job_ended``, called by ``app.core.endings``):
  ``{"type", "timestamp", "data"}`` as Standard Webhooks recommends, ``type`` ``job.completed``,
  ``job.failed``, ``job.cancelled`` or ``batch.ended``. Its id (the ``webhook-id`` header) is made
  of the job's (or batch's) id and its end, so it is the same on every attempt, and an event is
  enqueued once: its id is claimed first (``SET NX``). A batch's event goes out when the last of
  its videos ends: each end is written to the batch's set of ended jobs in one transaction that
  reads the set back, and whoever sees it complete claims the event (two videos ending together
  may both see it complete; one claims it).
- **The delivery**: its own RQ job (``workers.webhooks.deliver``) on the ``webhooks`` queue, which
  every worker serves first, retried by RQ on a capped exponential schedule (``retry_delays``) for
  at least ``RETRY_FOR`` seconds. Its arguments hold the event's body, never the secret: the job
  reads the user's signing secret when it runs, so a rotation applies to pending retries too.
- **What a client sees**: the delivery's state and each attempt (time, HTTP status, latency,
  error), in the job's (or batch's) status (``describe``).
- **Signing secrets**: one per user, ``whsec_`` and base64 of 32 random bytes, in Redis only; never
  in a job, an answer or a log. ``ytcaption users webhook-secret EMAIL`` rotates it and prints the
  new one. A user who has none when a delivery runs gets one then: a delivery is never unsigned.

Where the callback URL is kept: in the job's meta (the batch's record), as ``target`` makes it at
submit, with the submit's retry settings and how long records are kept (``RESULT_TTL``).
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, Retry

from app.core import stats
from app.core.schemas import iso
from app.core.settings import Settings

#: The queue of deliveries; every worker listens to it before its transcription queues.
WEBHOOK_QUEUE = "webhooks"
DELIVER = "workers.webhooks.deliver"
#: A failing delivery is retried for at least this long (seconds): the retry delays, each at its
#: least, add up to it.
RETRY_FOR = 86_400
#: Seconds a delivery job may run: six hops (the URL and five redirects) of ``HOP_TIMEOUT`` each, and room.
DELIVERY_TIMEOUT = 90
#: Seconds each request of a delivery may take (connect, send, answer).
HOP_TIMEOUT = 10
#: Redirects a delivery follows, each checked against the callback policy.
MAX_REDIRECTS = 5
STATES = ("pending", "delivered", "failed")

_SECRET = "ytcaption:webhook-secret:{}"
_ATTEMPTS = "ytcaption:webhook:{}"
_DELIVERY = "ytcaption:webhook-delivery:{}"
_EVENT_CLAIM = "ytcaption:webhook-event:{}"
_BATCH_ENDED = "ytcaption:batch-webhook:{}"


# --- where an event goes ----------------------------------------------------------------------


def target(url: str, settings: Settings) -> dict[str, Any]:
    """What a job's meta (a batch's record) keeps of its ``callback_url``: the URL, the retry
    schedule's settings and how long the delivery's records are kept, as they are at submit."""
    return {"url": url, "retry_base": settings.webhook_retry_base, "retry_max": settings.webhook_retry_max,
            "keep": settings.result_ttl}


def retry_delays(base: float, cap: float, span: float = RETRY_FOR,
                 rand: Callable[[], float] = random.random) -> list[float]:
    """The delays before each retry: ``app.core.jobs.backoff_delays`` (exponential from ``base``, capped
    at ``cap``, each between half and all of its ceiling), as many as make at least ``span`` seconds
    even when every delay is drawn at its least."""
    from app.core.jobs import backoff_delays  # imported here: app.core.jobs imports this module (through endings)

    retries, least = 0, 0.0
    while least < span:
        least += min(cap, base * 2**retries) / 2
        retries += 1
    return backoff_delays(retries, base, cap, rand)


def event_id(subject_id: str, ending: str) -> str:
    """The ``webhook-id`` of the event of ``subject_id`` (a job or a batch) ending as ``ending``."""
    return f"evt_{subject_id}_{ending}"


# --- events, when a job ends -------------------------------------------------------------------


def job_ended(connection: Redis, job: Job, status: str, details: dict[str, Any]) -> None:
    """Enqueue the job's event if it came with a ``callback_url``, and its batch's once all its videos ended."""
    hook = job.meta.get("webhook")
    if hook:
        kwargs = job.kwargs
        data = {"job_id": job.id, "status": status,
                **({"filename": kwargs["upload"]["filename"]} if kwargs.get("upload") else
                   {"youtube_url": kwargs.get("url"), "video_id": kwargs.get("video_id")}),
                **({"batch_id": job.meta["batch_id"]} if job.meta.get("batch_id") else {}),
                **{name: details[name] for name in ("result", "error") if name in details}}
        enqueue(connection, job.id, kwargs.get("user_id"), f"job.{status}", data, hook, event_id(job.id, status))
    if job.meta.get("batch_id"):
        _batch_job_ended(connection, job, status)


def _batch_job_ended(connection: Redis, job: Job, status: str) -> None:
    from app.core.batches import read_batch  # imported here: app.core.batches imports app.core.jobs, which imports this

    batch_id = job.meta["batch_id"]
    record = read_batch(connection, batch_id)
    if record is None or not record.get("webhook"):
        return
    ended_key = _BATCH_ENDED.format(batch_id)
    with connection.pipeline() as pipe:  # MULTI: the set read back holds this end and every one before it
        pipe.hset(ended_key, job.id, status)
        pipe.expire(ended_key, record["webhook"]["keep"])
        pipe.hgetall(ended_key)
        ended = {job_id.decode(): value.decode() for job_id, value in pipe.execute()[-1].items()}
    if not set(record["job_ids"]) <= set(ended):
        return
    counts = {state: sum(value == state for value in ended.values()) for state in ("completed", "failed", "cancelled")}
    data = {"batch_id": batch_id, "total": len(record["job_ids"]), **counts, "job_ids": record["job_ids"]}
    enqueue(connection, batch_id, record["user_id"], "batch.ended", data, record["webhook"],
            event_id(batch_id, "ended"))


def enqueue(connection: Redis, subject_id: str, owner_id: str, event_type: str, data: dict[str, Any],
            hook: dict[str, Any], evt_id: str) -> bool:
    """Enqueue the delivery of one event, once per event id; say whether this call did."""
    keep = hook["keep"]
    if not connection.set(_EVENT_CLAIM.format(evt_id), 1, nx=True, ex=keep):
        return False
    body = json.dumps({"type": event_type, "timestamp": iso(datetime.now(timezone.utc)), "data": data},
                      default=str, ensure_ascii=False)
    delays = retry_delays(hook["retry_base"], hook["retry_max"])
    with connection.pipeline() as pipe:
        Queue(WEBHOOK_QUEUE, connection=connection).enqueue(
            DELIVER,
            # ``owner_id``, not ``user_id``: the status endpoint serves a job to the user its ``user_id``
            # names, and a delivery is not a client's job.
            kwargs={"event_id": evt_id, "subject_id": subject_id, "url": hook["url"], "body": body,
                    "owner_id": owner_id, "keep": keep},
            job_timeout=DELIVERY_TIMEOUT, result_ttl=keep, failure_ttl=keep,
            retry=Retry(max=len(delays), interval=delays),
            description=f"webhook {event_type} {evt_id}",
            pipeline=pipe,
        )
        _set_state(pipe, subject_id, keep, event_id=evt_id, url=hook["url"], state="pending")
        pipe.execute()
    return True


# --- deliveries: their state and attempts ------------------------------------------------------


def record_attempt(connection: Redis, subject_id: str, attempt: dict[str, Any], state: str, outcome: str,
                   keep: int) -> None:
    """Append an attempt (``at``, ``status``, ``latency_ms``, ``error``, ``url``), set the delivery's state,
    and count the attempt's ``outcome`` (``delivered``, ``retried`` or ``failed``), in one round trip."""
    key = _ATTEMPTS.format(subject_id)
    with connection.pipeline() as pipe:
        pipe.rpush(key, json.dumps(attempt))
        pipe.expire(key, keep)
        _set_state(pipe, subject_id, keep, state=state)
        stats.record_webhook(pipe, outcome)
        pipe.execute()


def _set_state(pipe: Pipeline, subject_id: str, keep: int, **fields: str) -> None:
    pipe.hset(_DELIVERY.format(subject_id), mapping=fields)
    pipe.expire(_DELIVERY.format(subject_id), keep)


def describe(job: Job) -> dict[str, Any] | None:
    """The ``webhook`` of a job's status document; None for a job without a ``callback_url``."""
    hook = job.meta.get("webhook")
    return delivery(job.connection, job.id, hook["url"]) if hook else None


def delivery(connection: Redis, subject_id: str, url: str) -> dict[str, Any]:
    """A job's or batch's webhook: ``url``, ``event_id`` (None until it ended), ``state``, ``attempts``."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(_DELIVERY.format(subject_id))
        pipe.lrange(_ATTEMPTS.format(subject_id), 0, -1)
        fields, attempts = pipe.execute()
    fields = {name.decode(): value.decode() for name, value in fields.items()}
    return {"url": url, "event_id": fields.get("event_id"), "state": fields.get("state", "pending"),
            "attempts": [json.loads(attempt) for attempt in attempts]}


# --- signing secrets -------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def rotate_secret(connection: Redis, user_id: str) -> str:
    """Give ``user_id`` a new signing secret and return it; the old one signs nothing from now on."""
    secret = new_secret()
    connection.set(_SECRET.format(user_id), secret)
    return secret


def signing_secret(connection: Redis, user_id: str) -> str:
    """``user_id``'s signing secret; one is made if the user has none (two deliveries at once agree on it)."""
    key = _SECRET.format(user_id)
    secret = connection.get(key)
    if secret is None:
        connection.set(key, new_secret(), nx=True)
        secret = connection.get(key)
    return secret.decode()
