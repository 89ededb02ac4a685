"""Redis keyspace notifications: how a process waits for a change in Redis without polling.

Two waiters use them: an idle worker waits for a job to be pushed on one of its queues (list
commands, ``workers.fetch``), and a request of the OpenAI-compatible API waits for its job to end
(hash commands on the job's key, ``wait_for_end``). ``enable`` turns on both kinds at once, so that
two processes turning them on at the same moment write the same value.

Where the Redis server refuses ``CONFIG SET`` (some managed services: set ``notify-keyspace-events``
to include ``Khl`` there instead), both look again every ``POLL_INTERVAL`` s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

#: Keyspace notifications: "K" (the key-space channel), "h" (hash commands), "l" (list commands).
NOTIFY_FLAGS = "Khl"
#: Seconds between two looks when Redis cannot notify.
POLL_INTERVAL = 1.0

_warned = False


def enable(connection: Redis) -> bool:
    """Whether Redis sends hash and list keyspace notifications, turning them on if it lets us."""
    global _warned
    try:
        flags = connection.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
        if "K" in flags and (("h" in flags and "l" in flags) or "A" in flags):
            return True
        connection.config_set("notify-keyspace-events", "".join(sorted(set(flags) | set(NOTIFY_FLAGS))))
        return True
    except ResponseError as error:
        if not _warned:
            _warned = True
            log.warning("Redis refused CONFIG (%s): waiting processes look every %.0f s instead of being woken. "
                        "Set notify-keyspace-events to include 'Khl' on the server.", error, POLL_INTERVAL)
        return False


class Doorbell:
    """Rings when one of ``keys`` changes (or every ``POLL_INTERVAL`` s where Redis cannot notify)."""

    def __init__(self, connection: Redis, keys: list[str]) -> None:
        self.pubsub = None
        if not enable(connection):
            return
        db = connection.connection_pool.connection_kwargs.get("db", 0)
        self.pubsub = connection.pubsub()
        self.pubsub.subscribe(*(f"__keyspace@{db}__:{key}" for key in keys))
        confirmed = 0
        while confirmed < len(keys):  # the subscription is in place once Redis confirmed it
            message = self.pubsub.get_message(timeout=5)
            if message is None:
                self.close()
                # Redis's own TimeoutError: RQ's loop retries the connection on it.
                raise RedisTimeoutError("Redis did not confirm the subscription to the keyspace notifications")
            confirmed += message["type"] == "subscribe"

    def wait(self, seconds: float) -> None:
        if self.pubsub is None:
            time.sleep(min(seconds, POLL_INTERVAL))
        else:
            self.pubsub.get_message(timeout=seconds)

    def close(self) -> None:
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_until(connection: Redis, keys: list[str], done: Callable[[], bool], timeout: float) -> bool:
    """Wait until ``done()``, looking again each time one of ``keys`` changes, at most ``timeout`` s;
    return the last ``done()``. Subscribed before the first look: a change from then on is seen."""
    deadline = time.monotonic() + timeout
    with Doorbell(connection, keys) as doorbell:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            doorbell.wait(remaining)
        return True
