"""Job counters kept in Redis (shared by every process and machine), read by ``app.metrics``."""

from __future__ import annotations

import math

from redis import Redis
from redis.client import Pipeline

SUBMITTED = "ytcaption:metrics:submitted"  # hash "queue|task" -> count
COMPLETED = "ytcaption:metrics:completed"  # hash "queue|status" -> count
DURATION = "ytcaption:metrics:duration:{}"  # hash per task: bucket bounds, "sum", "count"
BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)


def task_name(func_name: str) -> str:
    return func_name.rsplit(".", 1)[-1]


def record_submitted(connection: Redis | Pipeline, queue: str, task: str, count: int = 1) -> None:
    """Count submitted jobs; pass the pipeline that enqueues them, so counting costs no round trip."""
    connection.hincrby(SUBMITTED, f"{queue}|{task}", count)


def record_completed(connection: Redis | Pipeline, queue: str, status: str, task: str,
                     duration: float | None) -> None:
    """Count a job that ended (``finished``, ``failed`` or ``cancelled``) and, if it ran, its duration.

    Given a pipeline, only adds the commands to it (the worker counts a success in RQ's own
    transaction that records it); given a connection, sends them in one round trip.
    """
    pipe = connection if isinstance(connection, Pipeline) else connection.pipeline(transaction=False)
    pipe.hincrby(COMPLETED, f"{queue}|{status}", 1)
    if duration is not None:
        key = DURATION.format(task)
        for bound in BUCKETS:
            if duration <= bound:
                pipe.hincrby(key, bound_label(bound), 1)
        pipe.hincrbyfloat(key, "sum", duration)
        pipe.hincrby(key, "count", 1)
    if pipe is not connection:
        pipe.execute()


def bound_label(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)
