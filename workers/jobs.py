"""Job functions, enqueued by import path from the API (``workers.jobs.transcribe_video``).

A job takes JSON-friendly arguments only, reports its stage and progress in ``job.meta``, and
lets every error propagate so that RQ records the failure; before it does, the error's type
and message are put in ``job.meta["error"]`` for the status endpoint.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import now

from app.errors import JobCancelled, JobError, YtcaptionError
from app.jobs import is_cancel_requested
from app.settings import Settings
from app.transcripts import TranscriptStore
from app.urls import parse_video_url
from workers import engines
from workers.download import fetch_audio

log = logging.getLogger(__name__)

# Share of the progress bar each stage fills: download 0-20, transcription 20-95, storing 95-100.
DOWNLOAD_END = 20
TRANSCRIBE_END = 95


def job_work_dir(work_dir: Path, job_id: str) -> Path:
    """The temporary directory of one job (the worker removes it after the job, whatever happened)."""
    return work_dir / job_id


class Progress:
    """Writes stage and progress to ``job.meta``, at most every ``interval`` seconds per stage.

    Each write also checks for a cancel request, so a job stops even if the worker missed
    the stop command.
    """

    def __init__(self, job: Job, interval: float = 0.5) -> None:
        self.job = job
        self.interval = interval
        self._last_write = 0.0
        self._stage = None

    def update(self, stage: str, percent: float) -> None:
        now = time.monotonic()
        percent = max(int(percent), self.job.meta.get("progress", 0))
        if stage == self._stage and (now - self._last_write < self.interval or percent == self.job.meta["progress"]):
            return
        if is_cancel_requested(self.job.connection, self.job.id):
            raise JobCancelled()
        self.job.meta.update(stage=stage, progress=percent)
        self.job.save_meta()
        self._stage, self._last_write = stage, now


def transcribe_video(*, url: str, video_id: str | None, language: str | None, model: str, user_id: str,
                     max_duration: int | None = None) -> dict:
    """Download ``url``, transcribe it with ``model`` and store the transcript for ``user_id``.

    ``max_duration`` is the submitting user's tier limit (never above ``MAX_VIDEO_DURATION``).
    """
    job = get_current_job()
    settings = Settings.load()
    # A new attempt: the previous attempt's error becomes last_error, progress starts again.
    if "error" in job.meta:
        job.meta["last_error"] = job.meta.pop("error")
    max_attempts = job.meta.get("max_attempts", 1)
    job.meta.update(stage="starting", progress=0, attempt=max_attempts - (job.retries_left or 0))
    try:
        limit = min(max_duration or settings.max_video_duration, settings.max_video_duration)
        return _transcribe(job, settings, url=url, video_id=video_id, language=language, model=model,
                           user_id=user_id, max_duration=limit)
    except BaseException as exc:
        job.meta["error"] = describe_error(exc, job)
        if not is_transient(exc):
            job.retries_left = 0  # RQ retries on any failure; a permanent one must fail at once
        job.save_meta()
        raise


def is_transient(exc: BaseException) -> bool:
    """Whether running the job again later may succeed."""
    if isinstance(exc, JobError):
        return exc.transient
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, socket.timeout))


def extend_timeout(job: Job, settings: Settings, duration: float) -> None:
    """Give the job ``JOB_TIMEOUT_FLOOR + JOB_TIMEOUT_FACTOR * duration`` seconds in all.

    Moves the work horse's alarm (RQ's death penalty) and the job's ``timeout`` field, which
    the worker re-reads while it watches the horse.
    """
    wanted = math.ceil(settings.job_timeout_floor + settings.job_timeout_factor * duration)
    if wanted <= (job.timeout or 0):
        return
    elapsed = (now() - job.started_at).total_seconds() if job.started_at else 0.0
    job.timeout = wanted
    job.connection.hset(job.key, "timeout", wanted)
    if callable(signal.getsignal(signal.SIGALRM)):  # RQ's alarm is armed (we run in a work horse)
        signal.alarm(max(1, math.ceil(wanted - elapsed)))


def _transcribe(job: Job, settings: Settings, *, url, video_id, language, model, user_id,
                max_duration) -> dict[str, Any]:
    progress = Progress(job)
    progress.update("starting", 0)
    log.info("started", extra={"url": url, "attempt": job.meta.get("attempt"), "model": model})
    # The allowlist may have changed since the job was accepted: check the URL again.
    parse_video_url(url, settings.allowed_url_hosts)

    timings = {"queued": _seconds(job.enqueued_at, job.started_at)}
    directory = job_work_dir(settings.work_dir, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        media = fetch_audio(
            url, directory, max_duration=max_duration, allowed_hosts=settings.allowed_url_hosts,
            on_progress=lambda fraction: progress.update("downloading", DOWNLOAD_END * fraction),
            on_duration=lambda duration: extend_timeout(job, settings, duration),
        )
        timings["download"] = time.perf_counter() - started
        log.info("downloaded", extra={"seconds": round(timings["download"], 2), "file": media.path.name})

        progress.update("transcribing", DOWNLOAD_END)
        started = time.perf_counter()
        transcript = engines.current(settings).transcribe(
            str(media.path), language=language, model=model, max_duration=max_duration,
            on_progress=lambda fraction: progress.update(
                "transcribing", DOWNLOAD_END + (TRANSCRIBE_END - DOWNLOAD_END) * fraction),
            on_duration=lambda duration: extend_timeout(job, settings, duration),
        )
        timings["model_load"] = transcript.model_load_seconds
        timings["transcribe"] = time.perf_counter() - started - transcript.model_load_seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    progress.update("storing", TRANSCRIBE_END)
    started = time.perf_counter()
    transcription_id = job.id  # one transcript per job: running the job again overwrites it
    TranscriptStore(job.connection, settings.transcript_ttl).save({
        "transcription_id": transcription_id,
        "job_id": job.id,
        "user_id": user_id,
        "source_url": url,
        "video_id": video_id,
        "title": media.title,
        "language": transcript.language,
        "duration": transcript.duration,
        "model": transcript.model,
        "text": transcript.text,
        "segments": transcript.segments_as_dicts(),
        "created_at": time.time(),
    })
    timings["store"] = time.perf_counter() - started
    log.info("stored transcript", extra={"segments": len(transcript.segments), "language": transcript.language})
    return {
        "transcription_id": transcription_id,
        "processing_time": round(sum(value for key, value in timings.items() if key != "queued"), 3),
        "total_segments": len(transcript.segments),
        "language": transcript.language,
        "duration": transcript.duration,
        "model": transcript.model,
        "title": media.title,
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }


def describe_error(exc: BaseException, job: Job) -> dict[str, str]:
    """The ``error`` the status endpoint shows for ``exc``."""
    if isinstance(exc, YtcaptionError):
        return {"type": exc.code, "message": exc.message}
    if isinstance(exc, JobTimeoutException):
        return {"type": "job_timeout", "message": f"The job ran longer than {job.timeout} s and was stopped."}
    return {"type": "internal_error", "message": f"{exc.__class__.__name__}: {exc}"}


def _seconds(start, end) -> float:
    return (end - start).total_seconds() if start and end else 0.0
