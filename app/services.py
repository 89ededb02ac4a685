"""The Redis connection, queues and stores, built once per process and passed around.

Inside Flask, ``init_app`` stores them in ``app.extensions["ytcaption"]`` and ``services()``
reads them back. Outside Flask (CLI, workers, scheduler) call ``Services.from_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from redis import Redis
from rq import Queue

from app.jobs import make_queues
from app.quota import QuotaLedger, RateLimiter
from app.settings import Settings
from app.transcripts import TranscriptStore
from app.users import UserStore


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


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["ytcaption"] = Services.from_settings(settings)


def services() -> Services:
    """The services of the current Flask app."""
    return current_app.extensions["ytcaption"]
