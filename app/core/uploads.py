"""Uploaded audio, kept in Redis until its job ends: whichever worker takes the job, on any machine, reads it there.

Why Redis and not a directory: the API and the workers may be on different machines, and Redis is
the one thing they all reach. An upload is at most ``MAX_UPLOAD_BYTES`` (25 MiB by default, as
OpenAI's API), stored with its job in one transaction, and deleted when the job ends for good
(completed, failed without a retry left, cancelled: ``app.core.endings``).
Its key also expires after ``RESULT_TTL``: a job still waiting in its queue by then fails with
``upload_expired`` instead of keeping the audio forever.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

_UPLOAD = "ytcaption:upload:{}"


def key(job_id: str) -> str:
    return _UPLOAD.format(job_id)


def put(pipe: Pipeline, job_id: str, data: bytes, ttl: int) -> None:
    pipe.set(_UPLOAD.format(job_id), data, ex=ttl)


def read(connection: Redis, job_id: str) -> bytes | None:
    return connection.get(_UPLOAD.format(job_id))


def discard(connection: Redis, job_id: str) -> None:
    connection.delete(_UPLOAD.format(job_id))


def copy(connection: Redis, from_job: str, to_job: str) -> None:
    """Give ``to_job`` the upload of ``from_job``: the same audio, for a follower that takes the work over
    (``app.core.sharing``)."""
    connection.copy(_UPLOAD.format(from_job), _UPLOAD.format(to_job), replace=True)
