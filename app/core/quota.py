"""Monthly job quotas and per-key rate limits, each enforced by one atomic Redis script.

Usage is counted per user per calendar month (UTC) under its own key, so a new month starts at
zero by itself: nothing has to reset it, and a missed reset cannot matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from redis import Redis
from redis.client import Pipeline
from rq.job import Job

from app.core.errors import QuotaExceeded, RateLimited
from app.core.schemas import QuotaDocument, iso
from app.core.settings import Settings
from app.core.users import User

_USAGE = "ytcaption:usage:{}:{}"  # user id, period
_REFUNDED = "ytcaption:refunded:{}"  # job id
_RATE = "ytcaption:rate:{}:"  # minute; the key id follows (counted by UserStore.authenticate)
_USAGE_TTL = 100 * 86400  # a period's counter outlives its month, for reports

# Check and charge in one step: with 10 units left, 100 concurrent submits get exactly 10.
_CHARGE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[3]) > tonumber(ARGV[1]) then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, used}
"""

# Give units back (ARGV[1], default one), never going below zero.
_UNCHARGE = """
local back = math.min(tonumber(ARGV[1] or '1'), tonumber(redis.call('GET', KEYS[1]) or '0'))
if back > 0 then
  redis.call('DECRBY', KEYS[1], back)
end
return 1
"""

# Give a job's unit back once, however many times it is asked.
_REFUND = """
if redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then
""" + _UNCHARGE + """
end
return 0
"""


def period_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def period_end(moment: datetime) -> datetime:
    """The first instant of the next calendar month, UTC."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    period: str
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {"X-Quota-Limit": str(self.limit), "X-Quota-Remaining": str(self.remaining),
                "X-Quota-Reset": str(int(self.resets_at.timestamp()))}

    def document(self) -> QuotaDocument:
        return QuotaDocument(limit=self.limit, used=self.used, remaining=self.remaining, period=self.period,
                             resets_at=self.resets_at)


class QuotaLedger:
    def __init__(self, connection: Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._charge = connection.register_script(_CHARGE)
        self._uncharge = connection.register_script(_UNCHARGE)

    def limit_for(self, user: User) -> int:
        return user.quota if user.quota is not None else self.settings.quota_for(user.tier)

    def usage(self, user: User, moment: datetime | None = None) -> Quota:
        moment = moment or datetime.now(timezone.utc)
        used = int(self.connection.get(_USAGE.format(user.id, period_of(moment))) or 0)
        return Quota(self.limit_for(user), used, period_of(moment), period_end(moment))

    def charge(self, user: User, jobs: int = 1) -> Quota:
        """Count ``jobs`` against ``user``'s month (all or none), or raise ``QuotaExceeded`` (429)."""
        moment = datetime.now(timezone.utc)
        limit = self.limit_for(user)
        allowed, used = self._charge(keys=[_USAGE.format(user.id, period_of(moment))],
                                     args=[limit, _USAGE_TTL, jobs])
        quota = Quota(limit, int(used), period_of(moment), period_end(moment))
        if not allowed:
            raise _exceeded(quota, jobs)
        return quota

    @staticmethod
    def usage_key(user: User, moment: datetime) -> str:
        """The Redis key counting ``user``'s jobs in the month of ``moment``."""
        return _USAGE.format(user.id, period_of(moment))

    def charge_in(self, transaction: Pipeline, user: User, used: bytes | str | None, moment: datetime,
                  jobs: int = 1) -> Quota:
        """Count ``jobs`` in ``transaction`` (a MULTI under WATCH of ``usage_key``, whose value was ``used``),
        or raise ``QuotaExceeded``: the transaction fails if anything else charged the user meanwhile."""
        limit = self.limit_for(user)
        quota = Quota(limit, int(used or 0), period_of(moment), period_end(moment))
        if quota.used + jobs > limit:
            raise _exceeded(quota, jobs)
        key = self.usage_key(user, moment)
        transaction.incrby(key, jobs)
        transaction.expire(key, _USAGE_TTL)
        return Quota(limit, quota.used + jobs, quota.period, quota.resets_at)

    @contextmanager
    def charged(self, user: User, jobs: int = 1) -> Iterator[Quota]:
        """Charge ``jobs`` for the block that enqueues them; if it raises, nothing was enqueued,
        so the charge is undone."""
        quota = self.charge(user, jobs)
        try:
            yield quota
        except BaseException:
            self.uncharge(user.id, quota.period, jobs)
            raise

    def uncharge(self, user_id: str, period: str, jobs: int = 1) -> None:
        """Undo a charge whose jobs were never enqueued."""
        self._uncharge(keys=[_USAGE.format(user_id, period)], args=[jobs])


def _exceeded(quota: Quota, jobs: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"The monthly quota of {quota.limit} jobs has {quota.remaining} left, {jobs} asked; "
        f"it resets at {iso(quota.resets_at)}.",
        headers=quota.headers(), details={"quota": quota.document()})


def refund(connection: Redis, job: Job) -> bool:
    """Give back the unit ``job`` was charged (once per job): it failed for good, or was cancelled
    while it waited (queued, or for a retry)."""
    user_id, period = job.kwargs.get("user_id"), job.meta.get("quota_period")
    if not (user_id and period):
        return False
    script = connection.register_script(_REFUND)
    return bool(script(keys=[_USAGE.format(user_id, period), _REFUNDED.format(job.id)], args=[1, _USAGE_TTL]))


class RateLimiter:
    """A fixed one-minute window of requests per API key.

    The request is counted in the same round trip that authenticates it
    (``UserStore.authenticate(counter_prefix=...)``); this class names the window and judges the count.
    """

    #: Seconds a window's counters live: the minute, and one second of clock skew.
    counter_ttl = 61

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @staticmethod
    def window(now: float) -> str:
        """The counter prefix of the minute ``now`` falls in."""
        return _RATE.format(int(now // 60))

    def check(self, user: User, count: int, now: float) -> dict[str, str]:
        """Rate headers for the ``count``-th request of this minute, or ``RateLimited`` (429 with Retry-After)."""
        minute = int(now // 60)
        limit = self.settings.rate_limit_for(user.tier)
        reset_in = max(1, int((minute + 1) * 60 - now + 0.999))
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, limit - count)),
                   "X-RateLimit-Reset": str((minute + 1) * 60)}
        if count > limit:
            raise RateLimited(f"More than {limit} requests in a minute with this key; retry in {reset_in} s.",
                              headers={**headers, "Retry-After": str(reset_in)})
        return headers
