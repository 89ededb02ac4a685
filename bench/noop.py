"""The no-op job of section 4: it does nothing but record when it ended.

Every runner (RQ's workers, ytcaption's, Celery's) runs this same function, so each job costs
the same one Redis round trip, and the job's own end times give the throughput.
"""

from __future__ import annotations

import time

from redis import Redis

_clients: dict[str, Redis] = {}


def noop(redis_url: str, key: str) -> None:
    """Append this moment to the Redis list ``key``."""
    client = _clients.get(redis_url)
    if client is None:  # redis-py's pool reconnects by itself in a forked child
        client = _clients[redis_url] = Redis.from_url(redis_url)
    client.rpush(key, repr(time.time()))
