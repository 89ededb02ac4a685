"""The Redis connection and the stores built on it, made once per process and passed around.

The API keeps one ``Services`` in ``app.extensions["ytcaption"]`` (see ``app.extensions``); the
CLI builds its own with ``Services.from_settings``; workers and the scheduler only need ``connect``.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from rq import Queue

from app.core.jobs import make_queues
from app.core.quota import QuotaLedger, RateLimiter
from app.core.settings import Settings
from app.core.transcripts import TranscriptStore
from app.core.users import UserStore


def connect(settings: Settings) -> Redis:
    """A Redis client for ``settings``; connecting is lazy, so this never blocks or fails."""
    return Redis.from_url(
        settings.effective_redis_url,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=30,
    )


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
