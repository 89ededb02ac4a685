"""The Redis connection and the stores built on it, made once per process and passed around.

The API keeps one ``Services`` in ``app.extensions["ytcaption"]`` (see ``app.extensions``); the
CLI builds its own with ``Services.from_settings``; workers and the scheduler only need ``connect``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel
from rq import Queue
from rq.job import Job

from app.core.errors import NotReplicated
from app.core.jobs import make_queues
from app.core.quota import QuotaLedger, RateLimiter
from app.core.settings import Settings
from app.core.transcripts import TranscriptStore
from app.core.users import UserStore

#: Timeouts of every connection to Redis, in seconds.
TIMEOUTS = {"socket_connect_timeout": 3, "socket_timeout": 10}
#: Timeouts of the questions to a Sentinel ("which is the master?"), in seconds: a Sentinel that does
#: not answer at once is skipped for the next one.
SENTINEL_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 3}
#: Key the replication check writes (see ``wait_for_replicas``).
_PROBE = "ytcaption:replication-probe"


def connect(settings: Settings) -> Redis:
    """A Redis client for ``settings``; connecting is lazy, so this never blocks or fails.

    With ``REDIS_SENTINELS`` it is redis-py's Sentinel-managed client of the master: each new
    connection asks the Sentinels where the master is, and a connection that fails (or finds the
    old master demoted to a replica) is dropped, so commands go to the new master once the
    Sentinels have elected it. Until then commands fail with ``ConnectionError`` (the API: 503).
    """
    if not settings.redis_sentinels:
        return Redis.from_url(settings.effective_redis_url, health_check_interval=30, **TIMEOUTS)
    sentinel_password = settings.redis_sentinel_password
    sentinels = Sentinel(
        settings.sentinel_addresses,
        sentinel_kwargs={**SENTINEL_TIMEOUTS, "retry": Retry(NoBackoff(), 0),
                         "password": sentinel_password.get_secret_value() if sentinel_password else None},
    )
    password = settings.redis_password
    return sentinels.master_for(
        settings.redis_sentinel_master,
        password=password.get_secret_value() if password else None,
        health_check_interval=30,
        # What Redis.from_url gives a client by default (10 retries, 10 ms doubling to 1 s); a client
        # made from a pool, as master_for makes it, would get no retry at all.
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=1), 10),
        **TIMEOUTS,
    )


def wait_for_replicas(connection: Redis, settings: Settings, job_ids: Sequence[str],
                      batch_id: str | None = None) -> None:
    """Return once ``REDIS_WAIT_REPLICAS`` replicas hold the jobs just accepted (and all written before).

    Redis ``WAIT`` counts the replicas that have the last write *of its own connection*, and the
    submit wrote on whichever pooled connection its transaction took. So this writes a probe on
    one connection and waits on that same connection: replication is one ordered stream, so a
    replica that has the probe has the jobs too. The jobs are looked up on that connection first,
    in case a failover since the enqueue has lost them.

    Raises:
        NotReplicated: fewer replicas confirmed within ``REDIS_WAIT_TIMEOUT`` (the jobs are on the
            master and will normally run), Redis failed meanwhile, or the jobs are gone.
    """
    wanted = settings.redis_wait_replicas
    if wanted == 0:
        return
    if batch_id is None:
        what, details = f"Job {job_ids[0]}", {"job_id": job_ids[0]}
    else:
        what, details = f"Batch {batch_id}", {"batch_id": batch_id, "job_ids": list(job_ids)}
    try:
        with connection.pipeline(transaction=False) as pipe:  # one connection (WAIT cannot block in MULTI)
            pipe.exists(*(Job.key_for(job_id) for job_id in job_ids))
            pipe.set(_PROBE, time.time())
            pipe.execute_command("WAIT", wanted, max(1, round(settings.redis_wait_timeout * 1000)))
            found, _, confirmed = pipe.execute()
    except (RedisConnectionError, RedisTimeoutError):
        raise NotReplicated(f"{what} was accepted, but Redis failed before a replica confirmed it, so it may be "
                            f"lost: look it up before submitting again.", details) from None
    if found < len(job_ids):
        raise NotReplicated(f"{what} was lost in a Redis failover before a replica had it; submit again.", details)
    if confirmed < wanted:
        raise NotReplicated(f"{what} is queued on the Redis master, but only {confirmed} of {wanted} replica(s) "
                            f"confirmed it within {settings.redis_wait_timeout:g} s. It will normally run: look it "
                            f"up rather than submitting again.", details)


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: Redis
    queues: dict[str, Queue]
    users: UserStore
    transcripts: TranscriptStore
    quota: QuotaLedger
    rate_limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        redis = connect(settings)
        return cls(
            settings=settings,
            redis=redis,
            queues=make_queues(redis),
            users=UserStore(redis),
            transcripts=TranscriptStore(redis, settings.transcript_ttl),
            quota=QuotaLedger(redis, settings),
            rate_limiter=RateLimiter(settings),
        )
