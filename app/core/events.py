"""A job's live events, in a Redis stream per job: what ``GET …/status/<id>/events`` sends (Server-Sent Events).

The job appends ``stage`` and ``progress`` as it reports them and each ``segment`` as the engine
writes it; whatever ends the job appends one final ``completed``, ``failed`` or ``cancelled`` (RQ's
callbacks, or the API's cancel of a job still queued), carrying what the status would say. A
stream's entry ids are the events' ids, so a client that reconnects with ``Last-Event-ID`` gets
exactly the events after it. Readers block on ``XREAD``: no polling, and under gunicorn's gevent
workers an open stream holds a greenlet, not a process. A stream is capped at ``MAX_EVENTS`` and
expires with the job's record (``RESULT_TTL``).

A job that does the work of others too (in-flight coalescing, ``app.core.sharing``) appends each
event that is not final to its followers' streams as well, in the same script; a follower's stream
starts as a copy of its leader's. Final events are each job's own.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

_EVENTS = "ytcaption:events:{}"
#: The ids of the jobs that follow a job (``app.core.sharing``), whose streams get its events too.
FOLLOWERS = "ytcaption:followers:{}"
#: The events kept per job: a recording of several hours has a few thousand segments.
MAX_EVENTS = 20_000
FINAL = ("completed", "failed", "cancelled")
#: Seconds a stream is kept after its last event, at least (a finished job's record is kept ``RESULT_TTL``).
KEEP = 86_400

# KEYS: the job's stream, its followers set. ARGV: event, data, MAX_EVENTS, keep, the streams' key prefix,
# whether to copy it to the followers (1) or not (0).
_PUBLISH = Script(None, b"""
local targets = {KEYS[1]}
if ARGV[6] == '1' then
  for _, follower in ipairs(redis.call('SMEMBERS', KEYS[2])) do table.insert(targets, ARGV[5] .. follower) end
end
for _, stream in ipairs(targets) do
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1], 'data', ARGV[2])
  redis.call('EXPIRE', stream, ARGV[4])
end
return #targets
""")


def key(job_id: str) -> str:
    return _EVENTS.format(job_id)


def publish(connection: Redis | Pipeline, job_id: str, event: str, data: dict[str, Any], keep: int = KEEP) -> None:
    """Append ``event`` (``stage``, ``progress``, ``segment`` or one of ``FINAL``) with its JSON ``data`` to the
    job's stream (and, if not final, to its followers'): in ``connection`` if it is a pipeline, else in one
    round trip of its own."""
    keys = [key(job_id), FOLLOWERS.format(job_id)]
    args = [event, json.dumps(data, ensure_ascii=False), MAX_EVENTS, keep, _EVENTS.format(""),
            0 if event in FINAL else 1]
    if isinstance(connection, Pipeline):  # EVAL: redis-py checks a pipeline's scripts in a round trip of its own
        connection.eval(_PUBLISH.script, len(keys), *keys, *args)
    else:
        _PUBLISH(keys=keys, args=args, client=connection)


def read(connection: Redis, job_id: str, after: str, block_ms: int | None) -> list[tuple[str, str, dict]]:
    """The events after id ``after`` (``0``: from the start), waiting up to ``block_ms`` for one (None: not at all)."""
    answer = connection.xread({key(job_id): after}, count=500, block=block_ms)
    return [(entry_id.decode(), fields[b"event"].decode(), json.loads(fields[b"data"]))
            for _, entries in answer for entry_id, fields in entries]
