"""How a worker takes its next job: in priority order, without ever holding it where no one can find it.

RQ 3.0 pops from several queues with ``BLPOP``: a job popped by a worker that dies before the job
reaches RQ's started registry is in no list and no registry, lost. ``FetchingQueue`` is the
worker's ``queue_class`` (RQ's extension point for this): its ``dequeue_any`` moves the first job
of the first non-empty queue to the worker's fetched list in one Redis operation
(``app.core.reliability.fetch``), where ``recover_fetched`` finds it should the worker die.

When every queue is empty the worker waits for Redis to say that one of its queue lists changed
(keyspace notifications for list commands, which the worker turns on: ``app.core.notifications``),
then looks again; it does not poll. Where the Redis server refuses ``CONFIG SET`` (some managed
services; set the option there instead) the worker looks once a second.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job

from app.core.notifications import Doorbell
from app.core.reliability import fetch, release

#: Seconds a worker holds a queue's maintenance lock at most (should it die holding it).
MAINTENANCE_LOCK_TTL = 30


class FetchingQueue(Queue):
    """RQ's Queue, whose ``dequeue_any`` is ytcaption's reliable fetch for the worker ``fetcher``."""

    def __init__(self, *args, fetcher: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fetcher = fetcher

    # Why: RQ takes this lock for 15 minutes and releases it when the queue's maintenance is done;
    # a worker killed in the middle of it (seen in the kill storm) stopped the abandoned-job
    # cleanup of the queue, so the recovery of every job a dead worker was running, for that long.
    def acquire_maintenance_lock(self) -> bool:
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_TTL))

    @classmethod
    def dequeue_any(cls, queues: Sequence[Queue], timeout: int | None, connection: Redis, job_class=None,
                    serializer=None, death_penalty_class=None) -> tuple[Job, Queue] | None:
        """The next job and its queue, trying ``queues`` in order; blocks up to ``timeout`` s (None:
        does not block) and then raises ``DequeueTimeout``, as RQ's does."""
        fetcher = next(queue.fetcher for queue in queues if getattr(queue, "fetcher", None))
        queue_keys = [queue.key for queue in queues]
        job_class = job_class or cls.job_class
        deadline = None if timeout is None else time.monotonic() + timeout
        doorbell = None
        try:
            while True:
                fetched = fetch(connection, fetcher, queue_keys)
                if fetched is not None:
                    queue_key, job_id = fetched
                    try:
                        job = job_class.fetch(job_id, connection=connection, serializer=serializer)
                    except NoSuchJobError:  # expired or deleted while waiting: nothing to run
                        release(connection, fetcher, job_id)
                        continue
                    queue = cls.from_queue_key(queue_key, connection=connection, job_class=job_class,
                                               serializer=serializer, death_penalty_class=death_penalty_class)
                    return job, queue
                if deadline is None:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DequeueTimeout(timeout, queue_keys)
                if doorbell is None:
                    # Subscribed before looking again: a job pushed from now on rings it.
                    doorbell = Doorbell(connection, queue_keys)
                    continue
                doorbell.wait(remaining)
        finally:
            if doorbell is not None:
                doorbell.close()
