"""A job's live events, in a Redis stream per job: what ``GET …/status/<id>/events`` sends (Server-Sent Events).

The job appends ``stage`` and ``progress`` as it reports them and each ``segment`` as the engine
writes it; whatever ends the job appends one final ``completed``, ``failed`` or ``cancelled`` (RQ's
callbacks, or the API's cancel of a job still queued), carrying what the status would say. A
stream's entry ids are the events' ids, so a client that reconnects with ``Last-Event-ID`` gets
exactly the events after it. Readers block on ``XREAD``: no polling, and under gunicorn's gevent
workers an open stream holds a greenlet, not a process. A stream is capped at ``MAX_EVENTS`` and
expires with the job's record (``RESULT_TTL``).
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from redis.client import Pipeline

_EVENTS = "ytcaption:events:{}"
#: The events kept per job: a recording of several hours has a few thousand segments.
MAX_EVENTS = 20_000
FINAL = ("completed", "failed", "cancelled")
#: Seconds a stream is kept after its last event, at least (a finished job's record is kept ``RESULT_TTL``).
KEEP = 86_400


def key(job_id: str) -> str:
    return _EVENTS.format(job_id)


def publish(connection: Redis | Pipeline, job_id: str, event: str, data: dict[str, Any], keep: int = KEEP) -> None:
    """Append ``event`` (``stage``, ``progress``, ``segment`` or one of ``FINAL``) with its JSON ``data``: in
    ``connection`` if it is a pipeline, else in one round trip of its own."""
    name = key(job_id)
    pipe = connection if isinstance(connection, Pipeline) else connection.pipeline(transaction=False)
    pipe.xadd(name, {"event": event, "data": json.dumps(data, ensure_ascii=False)}, maxlen=MAX_EVENTS,
              approximate=True)
    pipe.expire(name, keep)
    if pipe is not connection:
        pipe.execute()


def read(connection: Redis, job_id: str, after: str, block_ms: int | None) -> list[tuple[str, str, dict]]:
    """The events after id ``after`` (``0``: from the start), waiting up to ``block_ms`` for one (None: not at all)."""
    answer = connection.xread({key(job_id): after}, count=500, block=block_ms)
    return [(entry_id.decode(), fields[b"event"].decode(), json.loads(fields[b"data"]))
            for _, entries in answer for entry_id, fields in entries]
