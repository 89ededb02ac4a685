"""Never transcribe the same thing twice: the result cache and in-flight coalescing.

Two requests ask for the same work when they name the same YouTube video (or upload the same
audio, by SHA-256; or give the same URL on another host the operator allows) with the same model,
language, source and engine options (``work_key``).

- **Result cache**: a job that completed records its transcript under its work key for
  ``RESULT_CACHE_TTL`` (not a job of a URL on another host than YouTube: what it serves may
  change). A later submit of the same work (``"cache": false`` opts out) gets a job of its own that
  is ``completed`` at once (``cached: true``) with its own copy of the transcript: no worker, no
  download, ``QUOTA_CACHE_HIT_COST`` units of quota. Not when the video is longer than the
  submitting user's tier allows: that submit runs, and fails as it would have.
- **In-flight coalescing** (``cache: false`` opts out too): while a job for the same work (on the
  same queue, for the same duration limit) waits or runs, the *leader*, an identical submit from any user gets a
  *follower*: a job of its own, charged as any job, that is not queued (RQ status ``deferred``) and
  whose status, stage, progress and live events are the leader's (``describe_follower``;
  ``app.core.events`` copies the leader's events to its followers). When the leader ends
  (``leader_ended``, from ``app.core.endings``) each follower ends alike: completed with its own
  copy of the transcript, or failed with the same error (and its quota unit back). A cancelled
  leader hands the work to its first follower, which is queued at the front of its queue and leads
  the others from then on (the work starts again: the cancelled run's files went with it). A
  cancelled follower leaves the others alone (``cancel_follower``).

Nothing in a job of one user says who else asked: each has its own id, transcript and events.

Keys: ``ytcaption:result:<work key>`` (the cache), ``ytcaption:flight:<work key>:<queue>:<limit>`` (the
leader's id while it waits or runs), ``ytcaption:followers:<leader id>`` (a set) and
``ytcaption:follows:<follower id>``. Should a leader's end be lost with its process, its followers
are in no queue: the orphan sweep (``app.core.reliability``) queues each on its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from rq import Queue
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.utils import now

from app.core import events, stats, uploads
from app.core.quota import refund
from app.core.settings import Settings
from app.core.stats import record_completed, task_name
from app.core.transcripts import TranscriptStore

_RESULT = "ytcaption:result:{}"
_FLIGHT = "ytcaption:flight:{}:{}"
FOLLOWERS = events.FOLLOWERS
FOLLOWS = "ytcaption:follows:{}"
STATS = stats.SHARING
#: Seconds the keys of work in flight are kept at most (a bound on what a lost leader leaves behind).
FLIGHT_TTL = 7 * 86400

# A job was just queued (in the same transaction): it leads the work of the flight key, unless a job that
# may still do that work leads it already; then the job leaves its queue and follows that one instead (RQ
# status deferred), with a copy of the leader's events so far and without its own copy of the audio.
# KEYS: the flight key, the job's key, its queue's list, its upload's key, STATS.
# ARGV: the job's id, the prefixes of job keys, followers sets, follows keys and event streams; FLIGHT_TTL,
# the events' keep.
_SHARE = Script(None, b"""
local leader = redis.call('GET', KEYS[1])
if leader and leader ~= ARGV[1] then
  local status = redis.call('HGET', ARGV[2] .. leader, 'status')
  if status == 'queued' or status == 'started' or status == 'scheduled' then
    redis.call('LREM', KEYS[3], -1, ARGV[1])
    redis.call('HSET', KEYS[2], 'status', 'deferred')
    redis.call('DEL', KEYS[4])
    redis.call('SADD', ARGV[3] .. leader, ARGV[1])
    redis.call('EXPIRE', ARGV[3] .. leader, ARGV[6])
    redis.call('SET', ARGV[4] .. ARGV[1], leader, 'EX', ARGV[6])
    local stream = ARGV[5] .. ARGV[1]
    for _, entry in ipairs(redis.call('XRANGE', ARGV[5] .. leader, '-', '+')) do
      redis.call('XADD', stream, '*', unpack(entry[2]))
    end
    if redis.call('EXISTS', stream) == 1 then redis.call('EXPIRE', stream, ARGV[7]) end
    redis.call('HINCRBY', KEYS[5], 'coalesced', 1)
    return leader
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6])
return false
""")

# The leader ended: stop being the work in flight (if it still is) and take its followers.
# KEYS: the flight key, the leader's followers set. ARGV: the leader's id.
_TAKE_FOLLOWERS = Script(None, b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local followers = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return followers
""")

# A follower is cancelled: leave its leader's set, if it is still in it. KEYS: the set, its follows key.
# ARGV: the follower's id.
_LEAVE = Script(None, b"""
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
""")


def work_key(video_id: str | None, url: str | None, upload_sha256: str | None, model: str, language: str | None,
             source: str, options: dict[str, Any]) -> str:
    """What identifies the work a request asks for."""
    if video_id is not None:
        what = ["video", video_id]
    elif upload_sha256 is not None:
        what = ["upload", upload_sha256]
    else:
        what = ["url", url]
    fields = [*what, model, language or "auto", source, sorted(options.items())]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def cacheable(video_id: str | None, url: str | None) -> bool:
    """Whether the result may answer later requests: a YouTube video's or an upload's, not a URL's on another
    host (what it serves may change; the same URL at the same moment is still shared in flight)."""
    return video_id is not None or url is None


def flight_key(key: str, queue: str, max_duration: int | None) -> str:
    """Work in flight is shared on one queue (a pro user's job does not wait on the free queue) and for one
    duration limit (a job that fails for a free user's limit must not fail a pro user's)."""
    return _FLIGHT.format(key, f"{queue}:{max_duration or 0}")


@dataclass(frozen=True)
class CacheHit:
    transcript: dict[str, Any]
    result: dict[str, Any]


def cached(connection: Redis, key: str, max_duration: int | None, transcripts: TranscriptStore) -> CacheHit | None:
    """The completed work recorded under ``key``, if its transcript is still kept and no longer than
    ``max_duration``."""
    raw = connection.get(_RESULT.format(key))
    if raw is None:
        return None
    entry = json.loads(raw)
    transcript = transcripts.get(entry["transcription_id"])
    if transcript is None or (max_duration and (transcript.get("duration") or 0) > max_duration):
        return None
    return CacheHit(transcript, entry["result"])


def remember(connection: Redis | Pipeline, key: str, result: dict[str, Any], ttl: int) -> None:
    """Record a completed job's result (its transcript is ``result["transcription_id"]``) for ``ttl`` s."""
    if ttl > 0:
        connection.set(_RESULT.format(key), json.dumps({"transcription_id": result["transcription_id"],
                                                          "result": result}), ex=ttl)


def share(pipe: Pipeline, flight: str, job: Job, upload_key: str) -> None:
    """In ``pipe``, after the commands that queue ``job``: lead the work of ``flight``, or follow its leader."""
    keys = [flight, job.key, Queue.redis_queue_namespace_prefix + job.origin, upload_key, STATS]
    # EVAL, not a Script: redis-py checks a pipeline's scripts with a round trip of its own (SCRIPT EXISTS).
    pipe.eval(_SHARE.script, len(keys), *keys, job.id, Job.redis_job_namespace_prefix, FOLLOWERS.format(""),
              FOLLOWS.format(""), events.key(""), FLIGHT_TTL, events.KEEP)


def leader_of(connection: Redis, job_id: str) -> str | None:
    leader = connection.get(FOLLOWS.format(job_id))
    return leader.decode() if leader is not None else None


def count(connection: Redis | Pipeline, outcome: str) -> None:
    connection.hincrby(STATS, outcome, 1)


def finish_cached(pipe: Pipeline, job: Job, hit: CacheHit, user_id: str, transcripts: TranscriptStore) -> dict:
    """Make ``job`` (created, not queued) completed with its own copy of ``hit``'s transcript; return its result."""
    result = _own_result(job, hit.transcript, hit.result, user_id, pipe, transcripts)
    _finish(pipe, job, result)
    return result


def leader_ended(connection: Redis, job: Job, status: str, details: dict[str, Any], settings: Settings) -> None:
    """``job`` ended for good: remember its result, and end its followers alike (or hand them the work)."""
    key = job.meta.get("work_key")
    if key is None:
        return
    result = details.get("result")
    # Only a job that did the work (a worker ran it) is remembered, not one ended with it or from the cache.
    if status == "completed" and isinstance(result, dict) and job.worker_name \
            and cacheable(job.kwargs.get("video_id"), job.kwargs.get("url")):
        remember(connection, key, result, settings.result_cache_ttl_seconds)
    flight = flight_key(key, job.origin, job.kwargs.get("max_duration"))
    members = [member.decode() for member in
               _TAKE_FOLLOWERS(keys=[flight, FOLLOWERS.format(job.id)], args=[job.id], client=connection)]
    # Those that still follow it (one the orphan sweep queued on its own follows nothing), in one round trip.
    leaders = connection.mget([FOLLOWS.format(member) for member in members]) if members else []
    followers = [member for member, leader in zip(members, leaders) if leader is not None and leader.decode() == job.id]
    if not followers:
        return
    jobs = [found for found in Job.fetch_many(followers, connection=connection) if found is not None]
    transcript = TranscriptStore(connection, settings.transcript_ttl).get(result["transcription_id"]) \
        if status == "completed" and isinstance(result, dict) else None
    if transcript is not None:
        _complete_followers(connection, jobs, transcript, result, settings)
    elif status == "failed":
        _fail_followers(connection, jobs, details.get("error"), settings)
    else:  # cancelled, or completed without a transcript left to copy: the work is done again
        _hand_over(connection, job, jobs, flight)


def describe_follower(connection: Redis, job: Job, document: dict[str, Any], describe) -> None:
    """A follower's status document takes its leader's state (``describe``: ``app.core.jobs.describe_job``)."""
    leader_id = leader_of(connection, job.id)
    try:
        leader = Job.fetch(leader_id, connection=connection) if leader_id else None
    except (NoSuchJobError, DeserializationError):  # gone: the follower is pending until the sweep queues it
        leader = None
    if leader is None:
        return
    state = describe(leader).model_dump(exclude_unset=True)
    if state["status"] not in ("pending", "processing"):
        return  # it ended a moment ago: its followers are being ended too
    for name in ("status", "stage", "progress", "attempt", "max_attempts", "started_at", "position",
                 "next_retry_at", "last_error"):
        if name in state:
            document[name] = state[name]


def cancel_follower(connection: Redis, job: Job) -> bool:
    """Take ``job`` out of the work it follows; False if it follows none (any more)."""
    leader_id = leader_of(connection, job.id)
    if leader_id is None:
        return False
    return bool(_LEAVE(keys=[FOLLOWERS.format(leader_id), FOLLOWS.format(job.id)], args=[job.id], client=connection))


# --- ending followers ------------------------------------------------------------------------


def _own_result(job: Job, transcript: dict, result: dict, user_id: str, pipe: Pipeline,
                transcripts: TranscriptStore) -> dict:
    """``job``'s own copy of a transcript (in ``pipe``), and the result that points at it."""
    transcripts.save({**transcript, "transcription_id": job.id, "job_id": job.id, "user_id": user_id,
                      "created_at": time.time()}, pipeline=pipe)
    return {**result, "transcription_id": job.id}


def _finish(pipe: Pipeline, job: Job, result: dict) -> None:
    """Record ``job`` as finished with ``result``, as RQ's worker records a job it ran."""
    job.started_at = job.started_at or now()
    job.ended_at = now()
    job.set_status(JobStatus.FINISHED, pipeline=pipe)
    job.save(pipeline=pipe, include_result=False)
    Result.create(job, Result.Type.SUCCESSFUL, return_value=result, ttl=job.result_ttl, pipeline=pipe)
    job.finished_job_registry.add(job, job.result_ttl, pipe)
    job.cleanup(job.result_ttl, pipeline=pipe, remove_from_queue=False)
    pipe.delete(FOLLOWS.format(job.id))


def _complete_followers(connection: Redis, followers: list[Job], transcript: dict, result: dict,
                        settings: Settings) -> None:
    from app.core.endings import job_ended  # here: app.core.endings imports this module

    transcripts = TranscriptStore(connection, settings.transcript_ttl)
    for follower in followers:
        with connection.pipeline() as pipe:
            own = _own_result(follower, transcript, result, follower.kwargs["user_id"], pipe, transcripts)
            _finish(pipe, follower, own)
            record_completed(pipe, follower.id, follower.origin, "finished", task_name(follower.func_name), None)
            pipe.execute()
        job_ended(connection, follower, "completed", settings, result=own)


def _fail_followers(connection: Redis, followers: list[Job], error: dict | None, settings: Settings) -> None:
    from app.core.endings import job_ended  # here: app.core.endings imports this module

    for follower in followers:
        follower.meta["error"] = error
        follower.ended_at = now()
        with connection.pipeline() as pipe:
            follower.set_status(JobStatus.FAILED, pipeline=pipe)
            follower.save(pipeline=pipe, include_result=False)
            message = f"The job it shared failed: {(error or {}).get('message')}"
            follower.failed_job_registry.add(follower, ttl=follower.failure_ttl, exc_string=message, pipeline=pipe)
            Result.create_failure(follower, follower.failure_ttl, exc_string=message, pipeline=pipe)
            pipe.delete(FOLLOWS.format(follower.id))
            record_completed(pipe, follower.id, follower.origin, "failed", task_name(follower.func_name), None)
            pipe.execute()
        refund(connection, follower)
        job_ended(connection, follower, "failed", settings, error=error)


def _hand_over(connection: Redis, leader: Job, followers: list[Job], flight: str) -> None:
    """The leader was cancelled (or its transcript is gone already): its first follower does the work now, at the
    front of its queue, and leads the rest."""
    heir, rest = followers[0], followers[1:]
    if leader.kwargs.get("upload"):
        uploads.copy(connection, leader.id, heir.id)
    with connection.pipeline() as pipe:
        pipe.multi()  # RQ's enqueue_job starts the transaction itself unless it is started
        pipe.delete(FOLLOWS.format(heir.id))
        pipe.set(flight, heir.id, ex=FLIGHT_TTL)
        for follower in rest:
            pipe.sadd(FOLLOWERS.format(heir.id), follower.id)
            pipe.set(FOLLOWS.format(follower.id), heir.id, ex=FLIGHT_TTL)
        pipe.expire(FOLLOWERS.format(heir.id), FLIGHT_TTL)
        heir.set_status(JobStatus.QUEUED, pipeline=pipe)  # RQ would take a deferred job for one with dependencies
        Queue(heir.origin, connection=connection).enqueue_job(heir, pipeline=pipe, at_front=True)
        pipe.execute()
