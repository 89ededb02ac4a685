"""No accepted job is lost: reliable fetch, recovery of fetched jobs, and the orphan sweeper.

Where an accepted job can be, and who finds it again if its process dies there:

1. **waiting** on its queue list (``rq:queue:<name>``): safe;
2. **fetched**: a worker moves it, in one Redis operation, from the first non-empty queue (in
   priority order) to its own *fetched list* (``ytcaption:fetched:<worker>``; see ``fetch``).
   Within milliseconds the worker *claims* it; its work horse takes it off the list once RQ has
   recorded the start. A job not claimed within ``FETCH_GRACE`` s (its worker died, or froze),
   or claimed by a worker that is gone but never started, is put back at the front of its queue
   by ``recover_fetched``, without using one of its attempts; a frozen worker that comes back
   finds its claim gone and does not run the job;
3. **running**: RQ's started registry, with a heartbeat; a job whose worker died is found
   abandoned by RQ's maintenance and retried (``worker_lost``, one attempt);
4. **scheduled** for a retry (RQ's scheduled registry), or **ended**.

Every job the API accepts is also written, in the same transaction, to a ledger (a sorted set
of accepted, not yet ended job ids, scored by acceptance time); ``app.core.stats.record_completed``
takes it off when the job ends. ``sweep_orphans`` finds ledger entries that have been in none of
the places above for more than ``ORPHAN_GRACE`` seconds (a write lost to a Redis crash, a process
killed between two non-atomic steps) and puts them back on their queue: ``orphan_requeued``.

All of it runs in Lua scripts, so several workers running it at the same time is harmless.
Key layouts are RQ's, read from its classes; Redis Cluster is not supported (the scripts name
keys they compute).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from redis import Redis
from redis.commands.core import Script
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution
from rq.job import Job, JobStatus

from app.core import stats
from app.core.sharing import FOLLOWS
from app.core.stats import record_recovered

log = logging.getLogger(__name__)

#: Accepted, not yet ended job ids, scored by the time they were accepted.
LEDGER = stats.LEDGER
#: Ledger entries found in no place, with the time they were first found so.
MISSING = "ytcaption:accepted:missing"
#: Names of the workers that may hold fetched jobs.
FETCHERS = "ytcaption:fetchers"
FETCHED = "ytcaption:fetched:{}"
#: When each fetched job was fetched (a sorted set, in seconds).
FETCHED_AT = "ytcaption:fetched-at"
#: Seconds after which a fetched job that was not claimed is put back (a live worker claims it at once).
FETCH_GRACE = 15
RECOVER_LOCK = "ytcaption:recover-lock"
SWEEP_LOCK = "ytcaption:sweep-lock"
#: Seconds between two sweeps for orphans (across all workers).
SWEEP_INTERVAL = 30
#: Seconds an accepted job must be in no queue, registry or fetched list before it is requeued.
ORPHAN_GRACE = 60

# KEYS: the worker's fetched list, FETCHERS, FETCHED_AT, then the queues in priority order.
# ARGV: the worker's name.
_FETCH_SCRIPT = """
for i = 4, #KEYS do
  local job_id = redis.call('LMOVE', KEYS[i], KEYS[1], 'LEFT', 'RIGHT')
  if job_id then
    redis.call('SADD', KEYS[2], ARGV[1])
    redis.call('ZADD', KEYS[3], redis.call('TIME')[1], job_id)
    return {KEYS[i], job_id}
  end
end
return false
"""

# KEYS: the worker's fetched list, FETCHED_AT. ARGV: the job id.
_CLAIM_SCRIPT = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: FETCHERS, FETCHED_AT. ARGV: grace, worker key prefix, fetched-list prefix, job key prefix,
# queue key prefix. Returns job id, worker name, job id, worker name, ...
_RECOVER_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local recovered = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local list = ARGV[3] .. name
  local gone = redis.call('EXISTS', ARGV[2] .. name) == 0
  for _, job_id in ipairs(redis.call('LRANGE', list, 0, -1)) do
    local fetched_at = redis.call('ZSCORE', KEYS[2], job_id)
    local stale = fetched_at and now - tonumber(fetched_at) >= tonumber(ARGV[1])
    if stale or gone then
      redis.call('LREM', list, 1, job_id)
      redis.call('ZREM', KEYS[2], job_id)
      local job = redis.call('HMGET', ARGV[4] .. job_id, 'origin', 'status')
      if job[1] and job[2] == 'queued' and not redis.call('LPOS', ARGV[5] .. job[1], job_id) then
        redis.call('LPUSH', ARGV[5] .. job[1], job_id)
        table.insert(recovered, job_id)
        table.insert(recovered, name)
      end
    end
  end
  if gone and redis.call('EXISTS', list) == 0 then redis.call('SREM', KEYS[1], name) end
end
return recovered
"""

# KEYS: LEDGER, MISSING, FETCHERS. ARGV: now, grace, job key prefix, queue key prefix, fetched-list
# prefix, follows-key prefix, then for each queue: its name, started, scheduled and deferred registry keys.
# A follower (app.core.sharing) is in no place of its own: it is placed while the job it follows is.
_SWEEP_SCRIPT = """
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local placed = {}
local function add_list(key)
  for _, job_id in ipairs(redis.call('LRANGE', key, 0, -1)) do placed[job_id] = true end
end
local function add_registry(key, composite)
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if composite then member = string.match(member, '^([^:]+)') end
    placed[member] = true
  end
end
for i = 7, #ARGV, 4 do
  add_list(ARGV[4] .. ARGV[i])
  add_registry(ARGV[i + 1], true)
  add_registry(ARGV[i + 2], false)
  add_registry(ARGV[i + 3], false)
end
for _, name in ipairs(redis.call('SMEMBERS', KEYS[3])) do add_list(ARGV[5] .. name) end

local ended = {finished = true, failed = true, stopped = true, canceled = true}
local requeued = {}
for _, job_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - grace)) do
  local job = redis.call('HMGET', ARGV[3] .. job_id, 'origin', 'status')
  if not job[1] or ended[job[2]] then
    redis.call('ZREM', KEYS[1], job_id)
    redis.call('HDEL', KEYS[2], job_id)
  elseif placed[job_id] or placed[redis.call('GET', ARGV[6] .. job_id)] then
    redis.call('HDEL', KEYS[2], job_id)
  else
    local since = tonumber(redis.call('HGET', KEYS[2], job_id))
    if not since then
      redis.call('HSET', KEYS[2], job_id, now)
    elseif now - since >= grace then
      redis.call('DEL', ARGV[6] .. job_id)
      redis.call('HSET', ARGV[3] .. job_id, 'status', 'queued')
      redis.call('LPUSH', ARGV[4] .. job[1], job_id)
      redis.call('HDEL', KEYS[2], job_id)
      table.insert(requeued, job_id)
    end
  end
end
for _, job_id in ipairs(redis.call('HKEYS', KEYS[2])) do
  if not redis.call('ZSCORE', KEYS[1], job_id) then redis.call('HDEL', KEYS[2], job_id) end
end
return requeued
"""

_FETCH, _CLAIM, _RECOVER, _SWEEP = (Script(None, script.encode())
                                    for script in (_FETCH_SCRIPT, _CLAIM_SCRIPT, _RECOVER_SCRIPT, _SWEEP_SCRIPT))


def accept(pipe, job_id: str) -> None:
    """Write ``job_id`` to the ledger; pass the transaction that enqueues the job."""
    pipe.zadd(LEDGER, {job_id: time.time()})


def fetched_key(worker_name: str) -> str:
    return FETCHED.format(worker_name)


def fetch(connection: Redis, worker_name: str, queue_keys: Sequence[str]) -> tuple[str, str] | None:
    """Move the first job of the first non-empty queue to ``worker_name``'s fetched list.

    Returns ``(queue_key, job_id)``, or None when every queue is empty.
    """
    result = _FETCH(keys=[fetched_key(worker_name), FETCHERS, FETCHED_AT, *queue_keys],
                                                 args=[worker_name], client=connection)
    if not result:
        return None
    return result[0].decode(), result[1].decode()


def claim(connection: Redis, worker_name: str, job_id: str) -> bool:
    """Claim a fetched job before starting it; False if it was put back on its queue meanwhile.

    A claimed job stays on the worker's list until ``release``: should the worker die before its
    work horse has started the job, ``recover_fetched`` puts it back once the worker is gone.
    """
    return bool(_CLAIM(keys=[fetched_key(worker_name), FETCHED_AT], args=[job_id], client=connection))


def release(connection: Redis, worker_name: str, job_id: str) -> None:
    """Take a job off the worker's fetched list once the worker is done with it."""
    with connection.pipeline() as pipe:
        pipe.lrem(fetched_key(worker_name), 1, job_id)
        pipe.zrem(FETCHED_AT, job_id)
        pipe.execute()


def taken_from(connection: Redis, job: Job, worker_name: str) -> bool:
    """Whether ``job``, which ``worker_name`` started, belongs to someone else now (or ended): run by
    another worker, back on its queue, waiting for a retry, or gone."""
    status, owner = connection.hmget(job.key, "status", "worker_name")
    status = status.decode() if status else None
    if status == JobStatus.STARTED:
        return bool(owner) and owner.decode() != worker_name
    if status == JobStatus.QUEUED:  # not started yet by the horse, or put back on its queue
        return connection.lpos(Queue.redis_queue_namespace_prefix + job.origin, job.id) is not None
    return True


def recover_fetched(connection: Redis, grace: float = FETCH_GRACE) -> list[str]:
    """Put fetched jobs back at the front of their queues: those not claimed within ``grace`` s (a
    live worker claims a job it fetched within milliseconds), and those claimed but not started
    by a worker that is gone (its RQ worker key expired)."""
    found = [value.decode() for value in _RECOVER(
        keys=[FETCHERS, FETCHED_AT],
        args=[grace, Worker.redis_worker_namespace_prefix, FETCHED.format(""), Job.redis_job_namespace_prefix,
              Queue.redis_queue_namespace_prefix], client=connection)]
    recovered = found[::2]
    for job_id, worker_name in zip(found[::2], found[1::2]):
        log.warning("fetched_job_requeued", extra={"job_id": job_id, "reason": "worker_lost", "worker": worker_name})
        # The gone worker may have registered an execution before it died: RQ would later take
        # it for the job's (abandoned) run, whoever runs the job by then.
        drop_executions(connection, job_id, worker_name)
    if recovered:
        record_recovered(connection, "worker_lost", len(recovered))
    return recovered


def drop_executions(connection: Redis, job_id: str, worker_name: str) -> None:
    """Remove ``worker_name``'s executions of ``job_id`` (RQ's started registry and execution records),
    read from the worker's own index: an execution record may have expired already."""
    prefix = f"{job_id}:"
    members = [member.decode() for member in connection.smembers(WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name))]
    if not any(member.startswith(prefix) for member in members):
        return
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return
    with connection.pipeline() as pipe:
        for member in members:
            if member.startswith(prefix):
                execution = Execution(member[len(prefix):], job_id, connection, worker_name=worker_name)
                execution.delete(job=job, pipeline=pipe)
        pipe.execute()


def sweep_orphans(connection: Redis, queue_names: Sequence[str], grace: float = ORPHAN_GRACE,
                  now: float | None = None) -> list[str]:
    """Requeue accepted jobs that have been in no queue, registry or fetched list for ``grace`` s."""
    args: list[str | float] = [now if now is not None else time.time(), grace, Job.redis_job_namespace_prefix,
                               Queue.redis_queue_namespace_prefix, FETCHED.format(""), FOLLOWS.format("")]
    for name in queue_names:
        queue = Queue(name, connection=connection)
        args += [name, queue.started_job_registry.key, queue.scheduled_job_registry.key,
                 queue.deferred_job_registry.key]
    requeued = [job_id.decode() for job_id in _SWEEP(
        keys=[LEDGER, MISSING, FETCHERS], args=args, client=connection)]
    for job_id in requeued:
        log.warning("orphan_requeued", extra={"job_id": job_id, "reason": "orphan"})
    if requeued:
        record_recovered(connection, "orphan", len(requeued))
    return requeued


def maintain(connection: Redis, queue_names: Sequence[str], interval: float) -> None:
    """Part of a worker's maintenance, shared by all workers (a lock each): recover fetched jobs at
    most once per ``interval`` s; sweep orphans at most every ``SWEEP_INTERVAL`` s (a sweep reads
    every queue list, so it is the more expensive one)."""
    if connection.set(RECOVER_LOCK, 1, nx=True, px=max(1, int(interval * 1000) - 500)):
        recover_fetched(connection)
    if connection.set(SWEEP_LOCK, 1, nx=True, px=int(SWEEP_INTERVAL * 1000)):
        sweep_orphans(connection, queue_names)
