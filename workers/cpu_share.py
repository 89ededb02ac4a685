"""A worker's share of the CPU: how many threads its transcriptions get with ``WHISPER_CPU_THREADS=0``.

Each worker's engine gets the usable cores ÷ the workers that share them, at least one thread:
two workers on 2 cores, each transcribing with 2 threads (4 threads on 2 cores), were slower
than with one thread each (docs/performance.md).

- **Usable cores**: the CPUs this process may run on (``os.sched_getaffinity``), fewer when its
  cgroup has a CPU quota (a container's ``--cpus``: ``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us``
  in v1), rounded down: threads beyond the quota are throttled.
- **Workers sharing them**: each ``ytcaption worker`` registers in Redis in its CPU pool, a sorted
  set of worker ids scored by the time their registration expires, renewed while the worker
  lives (``CpuPool``). The pool is the kernel the worker runs on (its boot id, the same in every
  container of a machine), and its container as well (the hostname) when a CPU quota gives the
  container cores of its own. So the workers of one machine divide its cores whether they run side
  by side or in containers, and each container with ``--cpus`` divides its own.

Workers come and go: a worker looks at its share between jobs and while idle, and restarts its
engine host with the new number of threads when it changed (``EngineHost.follow_cpu_share``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Where the cgroup file system is mounted (a container sees its own cgroup there).
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The same in every container of a machine, different after each boot.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: The sorted set of a pool's workers: a worker's id (not its RQ name, new each time RQ's work loop
#: restarts) → the time (epoch s) its registration expires.
POOL_KEY = "ytcaption:cpu_pool:{pool}"
#: Seconds a registration lasts unless renewed; a worker renews it at least every 15 s (heartbeats
#: during a job, maintenance when idle), so a worker killed with SIGKILL is forgotten within a minute.
POOL_TTL = 60


def threads_per_worker(cores: int, workers: int) -> int:
    """The threads each of ``workers`` transcriptions gets from ``cores`` cores: an equal share, at least 1."""
    return max(1, cores // max(1, workers))


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: those it may run on, fewer under a CPU quota (rounded down, at least 1)."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    return cores if quota is None else max(1, min(cores, math.floor(quota)))


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (``1.5``: one and a half), None when it has none."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()  # cgroup v2: "max 100000", "150000 100000"
    except (OSError, ValueError):
        try:  # cgroup v1: a quota of -1 is none
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period)


def pool_name(cgroup_root: Path = CGROUP_ROOT) -> str:
    """The CPU pool of this process: its kernel's boot id, and its hostname too when it has a CPU quota."""
    try:
        kernel = BOOT_ID.read_text().strip()
    except OSError:  # not Linux: the machine's name stands for it
        return socket.gethostname()
    return f"{kernel}/{socket.gethostname()}" if cpu_quota(cgroup_root) is not None else kernel


class CpuPool:
    """One worker's registration in its CPU pool, in Redis."""

    def __init__(self, connection: Redis, worker_id: str, pool: str | None = None, ttl: float = POOL_TTL) -> None:
        self.connection = connection
        self.worker_id = worker_id
        self.key = POOL_KEY.format(pool=pool or pool_name())
        self.ttl = ttl
        #: The last count Redis gave, used while Redis cannot give one.
        self.last_count = 1

    def workers(self) -> int:
        """The live workers of the pool, this one included (registered, or its registration renewed, now)."""
        now = time.time()
        try:
            with self.connection.pipeline() as pipe:
                pipe.zadd(self.key, {self.worker_id: now + self.ttl})
                pipe.zremrangebyscore(self.key, "-inf", now)
                pipe.zcard(self.key)
                pipe.expire(self.key, math.ceil(self.ttl))
                self.last_count = max(1, pipe.execute()[2])
        except RedisError as exc:
            log.warning("the workers sharing this machine's cores could not be counted (%s); taking %d",
                        exc, self.last_count)
        return self.last_count

    def renew(self) -> None:
        """Keep this worker's registration alive (while it runs a job)."""
        try:
            self.connection.zadd(self.key, {self.worker_id: time.time() + self.ttl})
        except RedisError:
            pass  # the next renewal, or the next count, registers it again

    def leave(self) -> None:
        """Unregister: the pool's other workers get a larger share from their next look."""
        try:
            self.connection.zrem(self.key, self.worker_id)
        except RedisError:
            pass  # the registration expires by itself

    @staticmethod
    def count(connection: Redis, pool: str | None = None) -> int:
        """The live workers of ``pool`` (this process's by default), for someone who is not one of them."""
        return connection.zcount(POOL_KEY.format(pool=pool or pool_name()), time.time(), "+inf")
