"""Job counters kept in Redis (shared by every process and machine), read by ``app.metrics``."""

from __future__ import annotations

import math

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script

SUBMITTED = "ytcaption:metrics:submitted"  # hash "queue|task" -> count
COMPLETED = "ytcaption:metrics:completed"  # hash "queue|status" -> count
DURATION = "ytcaption:metrics:duration:{}"  # hash per task: bucket bounds, "sum", "count"
RECOVERED = "ytcaption:metrics:recovered"  # hash reason -> count
SHARING = "ytcaption:metrics:sharing"  # hash hit|miss|coalesced -> count (app.core.sharing)
PROXY_DOWNLOADS = "ytcaption:metrics:proxy_downloads"  # hash "proxy label|outcome" -> count
WEBHOOKS = "ytcaption:metrics:webhook_deliveries"  # hash outcome -> count
#: What became of an attempt to deliver a webhook (``app.core.webhooks``).
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")
#: What became of a download through one of YTDLP_PROXIES.
PROXY_OUTCOMES = ("success", "proxy_error", "bot_check")
ENDED = "ytcaption:ended:{}:{}"  # set once per job and outcome, so that a job is counted once
ENDED_TTL = 7 * 86400
#: The ledger of accepted jobs (``app.core.reliability.LEDGER``; defined here, which imports nothing of ours).
LEDGER = "ytcaption:accepted"
BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)


# KEYS: the once-key, COMPLETED, the task's DURATION hash, LEDGER.
# ARGV: once-key TTL, "queue|status", job id, duration or "", then the bucket labels the duration is in.
_COUNT_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('ZREM', KEYS[4], ARGV[3])
if ARGV[4] ~= '' then
  for i = 5, #ARGV do redis.call('HINCRBY', KEYS[3], ARGV[i], 1) end
  redis.call('HINCRBYFLOAT', KEYS[3], 'sum', ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'count', 1)
end
return 1
"""
_COUNT_ONCE = Script(None, _COUNT_ONCE_SCRIPT.encode())  # bytes: no client needed to hash it


def task_name(func_name: str) -> str:
    return func_name.rsplit(".", 1)[-1]


def record_submitted(connection: Redis | Pipeline, queue: str, task: str, count: int = 1) -> None:
    """Count submitted jobs; pass the pipeline that enqueues them, so counting costs no round trip."""
    connection.hincrby(SUBMITTED, f"{queue}|{task}", count)


def record_completed(connection: Redis | Pipeline, job_id: str, queue: str, status: str, task: str,
                     duration: float | None) -> bool:
    """Count a job that ended (``finished``, ``failed`` or ``cancelled``) and, if it ran, its duration,
    and take it off the ledger of accepted jobs (``app.core.reliability``).

    Counted once per job and outcome, in one script: a job run twice (its worker froze, was given
    up for dead, and came back) still counts once. Returns whether this call counted it (always
    True given a pipeline, which only queues the script).
    """
    buckets = [bound_label(bound) for bound in BUCKETS if duration is not None and duration <= bound]
    counted = _COUNT_ONCE(
        keys=[ENDED.format(job_id, status), COMPLETED, DURATION.format(task), LEDGER],
        args=[ENDED_TTL, f"{queue}|{status}", job_id, "" if duration is None else repr(duration), *buckets],
        client=connection)
    return isinstance(connection, Pipeline) or bool(counted)


def record_recovered(connection: Redis | Pipeline, reason: str, count: int = 1) -> None:
    """Count jobs put back on their queue: fetched by a worker that was lost (``worker_lost``),
    running on one (``abandoned``), or found in no place (``orphan``)."""
    connection.hincrby(RECOVERED, reason, count)


def bound_label(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def record_proxy_download(connection: Redis | Pipeline, proxy_label: str, outcome: str) -> None:
    """Count a download that went through a proxy (named by its label: ``scheme://host:port``, no
    credentials): ``success``, or the failure that made the job try the next proxy."""
    connection.hincrby(PROXY_DOWNLOADS, f"{proxy_label}|{outcome}", 1)


def record_webhook(connection: Redis | Pipeline, outcome: str) -> None:
    """Count an attempt to deliver a webhook by its outcome (one of ``WEBHOOK_OUTCOMES``)."""
    connection.hincrby(WEBHOOKS, outcome, 1)
