"""Job functions, enqueued by import path from the API (``workers.jobs.transcribe_video``).

A job takes JSON-friendly arguments only, reports its stage and progress in ``job.meta``, and
lets every error propagate so that RQ records the failure; before it does, the error's type
and message are put in ``job.meta["error"]`` for the status endpoint. Three ways out besides
success and failure, each through RQ's own means:

- **cancelled**: the job sees its cancel request (``Progress``) and asks its worker to stop it
  with RQ's stop command, so RQ records it as ``stopped``;
- **handed back**: when its worker shuts down, RQ's ``HerokuWorker`` raises
  ``ShutDownImminentException`` in the job after the grace period; the job then returns RQ's
  ``Retry(enqueue_at_front=True)``, which puts it back at the front of its queue without using
  one of its attempts;
- **timed out**: RQ raises ``JobTimeoutException`` at the job's timeout, which the job extends once
  it knows the video's duration (``extend_timeout``).

And one way out that leaves no trace: a work horse that finds its job given to another worker
(its machine froze for longer than the job's heartbeat, or Redis came back from a crash without
the job's start) walks away (``ensure_owned``): it records nothing, so the job ends once, by the
run that owns it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import ShutDownImminentException
from rq.job import Job, Retry
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.utils import now

from app.core import events, uploads
from app.core.errors import (
    JobCancelled,
    JobError,
    JobTimedOut,
    UnexpectedJobError,
    UploadExpired,
    YtcaptionError,
    public_message,
)
from app.core.jobs import is_cancel_requested
from app.core.options import EngineOptions
from app.core.reliability import drop_executions
from app.core.settings import Settings
from app.core.transcripts import TranscriptStore, chapters_with_segments
from app.core.urls import parse_video_url
from workers import context
from workers.captions import track_language
from workers.download import Media, Metadata, fetch_media
from workers.engines import Segment, Transcript, media_duration
from workers.pieces import PieceStore, others_listening, transcribe_in_pieces

log = logging.getLogger(__name__)

# Share of the progress bar each stage fills: download 0-20, transcription 20-95, storing 95-100.
DOWNLOAD_END = 20
TRANSCRIBE_END = 95

#: How often a job may be handed back by workers shutting down before RQ fails it.
MAX_HAND_BACKS = 100
#: Seconds past its timeout after which a job's own progress updates stop it (RQ's alarm comes first).
DEADLINE_SLACK = 1.0
#: Seconds a cancelled job waits for its worker to stop it before it stops by itself.
STOP_WAIT = 10.0


def job_work_dir(work_dir: Path, job_id: str) -> Path:
    """The temporary directory of one job (removed after the job, whatever happened)."""
    return work_dir / job_id


class Progress:
    """Writes stage and progress to ``job.meta``, at most every ``interval`` seconds per stage.

    An update at least ``interval`` after the last one (written or not: a job waiting for pieces
    other workers transcribe reports the same progress for a while) also checks for a cancel
    request, so a job stops even if the worker missed the stop command (or the job was not running
    yet when it was sent). And every update checks the job's timeout: RQ's alarm raises its
    exception once, and yt-dlp turns an exception raised while it opens a connection into a
    network error that it retries (seen under load: a job with a 2 s timeout downloaded for 15 s).
    """

    def __init__(self, job: Job, interval: float = 0.5) -> None:
        self.job = job
        self.interval = interval
        self._last_write = 0.0
        self._stage = None

    def update(self, stage: str, percent: float) -> None:
        _check_deadline(self.job)
        now = time.monotonic()
        percent = max(int(percent), self.job.meta.get("progress", 0))
        if stage == self._stage and now - self._last_write < self.interval:
            return
        self._last_write = now
        ensure_owned(self.job)
        if is_cancel_requested(self.job.connection, self.job.id):
            stop(self.job)
        if stage != self._stage or percent != self.job.meta["progress"]:
            changed = stage != self._stage
            self.job.meta.update(stage=stage, progress=percent)
            self.job.save_meta()
            self._stage = stage
            with self.job.connection.pipeline(transaction=False) as pipe:  # the job's live events
                if changed:
                    events.publish(pipe, self.job.id, "stage", {"stage": stage})
                events.publish(pipe, self.job.id, "progress", {"stage": stage, "progress": percent})
                pipe.execute()


def _check_deadline(job: Job) -> None:
    """Raise RQ's timeout exception once the job has run past its (possibly extended) timeout."""
    if job.timeout and job.timeout > 0 and job.started_at:
        if (now() - job.started_at).total_seconds() > job.timeout + DEADLINE_SLACK:
            raise JobTimeoutException(f"Task exceeded maximum timeout value ({job.timeout} seconds)")


def ensure_owned(job: Job) -> None:
    """Walk away from ``job`` if it is no longer this work horse's: another worker runs it (or ran
    it), or it is back on its queue or waiting for a retry.

    Nothing is recorded (RQ's bookkeeping would overwrite that of the run that owns the job): the
    horse drops its worker's execution of the job and exits with status 0, which RQ's worker takes
    as a job done by the horse. Its files stay: the job's directory may be the owning run's too
    (another worker on this machine); the owning run, or the daily cleanup, removes it.
    """
    status, owner = job.connection.hmget(job.key, "status", "worker_name")
    if status == b"started" and owner and owner.decode() == job.worker_name:
        return
    log.warning("the job was given to another worker while this one was not answering; leaving it",
                extra={"owner": owner.decode() if owner else None, "status": status.decode() if status else None})
    try:
        drop_executions(job.connection, job.id, job.worker_name)
    except Exception:  # e.g. Redis unreachable: RQ's maintenance finds the execution expired, the job not started
        log.exception("could not drop this worker's execution of the job")
    finally:
        logging.shutdown()
        os._exit(0)


def stop(job: Job) -> None:
    """Have this job's worker stop it, as it stops any job on request (RQ status ``stopped``).

    The worker kills this work horse within moments; should it miss the command, the job stops
    by itself ``STOP_WAIT`` s later (status ``failed``, error ``cancelled``).
    """
    log.info("cancel requested; asking the worker to stop the job")
    send_stop_job_command(job.connection, job.id)
    time.sleep(STOP_WAIT)
    raise JobCancelled()


def transcribe_video(*, url: str | None, video_id: str | None, language: str | None, model: str, user_id: str,
                     max_duration: int | None = None, source: str = "whisper", upload: dict | None = None,
                     options: dict | None = None) -> dict | Retry:
    """Download ``url``, transcribe it with ``model`` and store the transcript for ``user_id``.

    ``max_duration`` is the submitting user's tier limit (never above ``MAX_VIDEO_DURATION``).
    ``source`` ``captions`` reads the video's own manual captions instead (no audio, no model),
    ``auto`` does when it has them (see ``workers.captions``). ``upload`` (``{"filename", "bytes"}``)
    instead of ``url``: the audio was uploaded with the request and waits in Redis (``app.core.uploads``).
    ``options``: what the request asked of the engine (``app.core.options.EngineOptions``).
    """
    job = get_current_job()
    settings = context.settings()
    # A new attempt: the previous attempt's error becomes last_error, progress starts again.
    if "error" in job.meta:
        job.meta["last_error"] = job.meta.pop("error")
    max_attempts = job.meta.get("max_attempts", 1)
    job.meta.update(stage="starting", progress=0, attempt=max_attempts - (job.retries_left or 0))
    try:
        limit = min(max_duration or settings.max_video_duration, settings.max_video_duration)
        return _transcribe(job, settings, url=url, video_id=video_id, language=language, model=model,
                           user_id=user_id, max_duration=limit, source=source, upload=upload,
                           options=EngineOptions.from_job(options))
    except ShutDownImminentException:
        ensure_owned(job)
        log.info("the worker is shutting down; handing the job back to the front of its queue")
        job.meta.update(stage="queued", progress=0)
        job.save_meta()
        return Retry(max=MAX_HAND_BACKS, enqueue_at_front=True)
    except BaseException as exc:
        ensure_owned(job)
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
    # Move the alarm only while it is RQ's job timeout (in a work horse): once the worker is shutting
    # down, the alarm is HerokuWorker's end of the grace period, which must not move.
    if isinstance(getattr(signal.getsignal(signal.SIGALRM), "__self__", None), BaseDeathPenalty):
        signal.alarm(max(1, math.ceil(wanted - elapsed)))


def _transcribe(job: Job, settings: Settings, *, url, video_id, language, model, user_id, max_duration,
                source, upload, options: EngineOptions) -> dict[str, Any]:
    progress = Progress(job)
    progress.update("starting", 0)
    log.info("started", extra={"url": url, "upload_bytes": upload and upload["bytes"],
                               "attempt": job.meta.get("attempt"), "model": model, "source": source})
    if url is not None:
        # The allowlist may have changed since the job was accepted: check the URL again.
        parse_video_url(url, settings.allowed_url_hosts)

    timings = {"queued": _seconds(job.enqueued_at, job.started_at)}
    pieces = 1
    directory = job_work_dir(settings.work_dir, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        if upload is not None:
            media = _uploaded(job, directory, upload["filename"])
        else:
            media = fetch_media(
                url, directory, settings, max_duration=max_duration, source=source, language=language,
                connection=job.connection,
                on_progress=lambda fraction: progress.update("downloading", DOWNLOAD_END * fraction),
                on_duration=lambda duration: extend_timeout(job, settings, duration),
            )
        timings["download"] = time.perf_counter() - started
        if media.captions is not None:
            log.info("read captions", extra={"seconds": round(timings["download"], 2), "track": media.caption_track})
            transcript = _captions_transcript(media)
            timings["model_load"] = timings["transcribe"] = 0.0  # no model, no audio: read with the download
        else:
            log.info("downloaded", extra={"seconds": round(timings["download"], 2), "file": media.path.name})
            progress.update("transcribing", DOWNLOAD_END)
            started = time.perf_counter()

            def transcribing(fraction: float) -> None:
                progress.update("transcribing", DOWNLOAD_END + (TRANSCRIBE_END - DOWNLOAD_END) * fraction)

            stitched = None
            segments = _Segments(job)
            if _worth_splitting(job, settings, media):
                stitched = transcribe_in_pieces(job, settings, media.path, directory, language=language,
                                                model=model, max_duration=max_duration, on_progress=transcribing,
                                                on_duration=lambda duration: extend_timeout(job, settings, duration),
                                                options=options, on_segment=segments)
            if stitched is not None:
                transcript, pieces = stitched.transcript, stitched.pieces
                log.info("stitched", extra={"pieces": pieces, "by_other_workers": stitched.helped})
            else:
                transcript = context.engine().transcribe(
                    str(media.path), language=language, model=model, max_duration=max_duration,
                    on_progress=transcribing, on_duration=lambda duration: extend_timeout(job, settings, duration),
                    on_segment=segments, options=options,
                )
            timings["model_load"] = transcript.model_load_seconds
            timings["transcribe"] = time.perf_counter() - started - transcript.model_load_seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    progress.update("storing", TRANSCRIBE_END)
    ensure_owned(job)  # the transcript and the result are this run's to write
    started = time.perf_counter()
    transcription_id = job.id  # one transcript per job: running the job again overwrites it
    used = "captions" if media.captions is not None else "whisper"
    metadata = media.metadata
    segments = transcript.segments_as_dicts()
    TranscriptStore(job.connection, settings.transcript_ttl).save({
        "transcription_id": transcription_id,
        "job_id": job.id,
        "user_id": user_id,
        "source_url": url,
        "filename": upload and upload["filename"],
        "video_id": video_id,
        "title": metadata.title,
        "channel": metadata.channel,
        "upload_date": metadata.upload_date,
        "language": transcript.language,
        "task": options.task,
        "temperature": options.temperature,
        "duration": transcript.duration,
        "source": used,
        "caption_track": media.caption_track,
        "model": transcript.model,
        "speech_detected": transcript.speech_detected,
        "speech_seconds": transcript.speech_seconds,
        "text": transcript.text,
        "segments": segments,
        "chapters": chapters_with_segments(metadata.chapters, segments),
        "created_at": time.time(),
    })
    timings["store"] = time.perf_counter() - started
    log.info("stored transcript", extra={"segments": len(transcript.segments), "language": transcript.language,
                                         "source": used})
    return {
        "transcription_id": transcription_id,
        "processing_time": round(sum(value for key, value in timings.items() if key != "queued"), 3),
        "total_segments": len(transcript.segments),
        "speech_detected": transcript.speech_detected,
        "pieces": pieces,
        "language": transcript.language,
        "duration": transcript.duration,
        "model": transcript.model,
        "title": metadata.title,
        "source": used,
        "channel": metadata.channel,
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }


class _Segments:
    """Each segment, as the engine writes it, appended to the job's live events (``app.core.events``)."""

    def __init__(self, job: Job) -> None:
        self.job, self.count = job, 0

    def __call__(self, segment: Segment, fraction: float) -> None:
        events.publish(self.job.connection, self.job.id, "segment",
                       {"id": self.count, "start": segment.start, "end": segment.end, "text": segment.text})
        self.count += 1


def _uploaded(job: Job, directory: Path, filename: str) -> Media:
    """The job's uploaded audio, from Redis to the job's directory (its name kept only for its extension)."""
    data = uploads.read(job.connection, job.id)
    if data is None:
        raise UploadExpired()
    path = directory / ("upload" + "".join(c for c in Path(filename).suffix[:10] if c.isalnum() or c == "."))
    path.write_bytes(data)
    return Media(metadata=Metadata(title=filename), path=path)


def _worth_splitting(job: Job, settings: Settings, media: Media) -> bool:
    """Whether to transcribe in pieces (``workers.pieces``): a long recording, and a worker to help."""
    if not settings.chunk_threshold_seconds:
        return False
    duration = media.metadata.duration or media_duration(media.path)
    return duration > settings.chunk_threshold_seconds and others_listening(job)


def transcribe_piece(*, parent_id: str, index: int, start: float, language: str | None, model: str,
                     options: dict | None = None) -> dict:
    """Transcribe piece ``index`` of the recording of job ``parent_id`` (``workers.pieces``).

    Nothing to do if the parent has ended, or has taken the piece itself; and the transcription
    stops when the parent ends meanwhile (cancelled, failed, handed back): it needs the piece no more.
    """
    job = get_current_job()
    settings = context.settings()
    store = PieceStore(job.connection, parent_id)
    parent_running = _ParentWatch(job.connection, parent_id)
    if not parent_running():
        return {"skipped": "its job has ended"}
    if not store.claim(index, job.id):
        return {"skipped": "another worker has it"}
    audio = store.audio(index)
    if audio is None:
        return {"skipped": "its audio is gone"}
    directory = job_work_dir(settings.work_dir, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "piece.flac"
    path.write_bytes(audio)

    def check(fraction: float) -> None:
        if not parent_running():
            raise _ParentEnded()

    try:
        transcript = context.engine().transcribe(str(path), language=language, model=model, on_progress=check,
                                                 options=EngineOptions.from_job(options))
    except _ParentEnded:
        return {"skipped": "its job ended meanwhile"}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    store.save_result(index, transcript, start, by=job.id)
    return {"segments": len(transcript.segments)}


class _ParentEnded(Exception):
    """Raised from a piece's progress callback to stop transcribing it."""


class _ParentWatch:
    """Whether a piece's parent job still runs (not cancelled), looked up at most once a second."""

    def __init__(self, connection, parent_id: str) -> None:
        self.connection, self.parent_id = connection, parent_id
        self._checked, self._running = 0.0, True

    def __call__(self) -> bool:
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            status = self.connection.hget(f"rq:job:{self.parent_id}", "status")
            self._running = status == b"started" and not is_cancel_requested(self.connection, self.parent_id)
        return self._running


def _captions_transcript(media: Media) -> Transcript:
    """The video's captions in the shape the engine's transcripts have (no model: ``model`` None).

    Their duration is the video's, from its metadata, or else where the last caption ends.
    """
    segments = media.captions
    duration = media.metadata.duration or max(segment.end for segment in segments)
    return Transcript(language=track_language(media.caption_track), duration=round(duration, 3), model=None,
                      segments=segments)


def describe_error(exc: BaseException, job: Job) -> dict[str, str]:
    """The ``error`` the status endpoint shows for ``exc``: a code and a sentence for the client.

    RQ logs an unexpected error in full; the client sees its kind, never a temporary path.
    """
    if isinstance(exc, JobTimeoutException):
        exc = JobTimedOut(f"The job ran longer than {job.timeout} s and was stopped.")
    elif not isinstance(exc, YtcaptionError):
        exc = UnexpectedJobError(
            f"The job failed unexpectedly ({exc.__class__.__name__}); the worker's log has the details.")
    return {"type": exc.code, "message": public_message(exc.message)}


def _seconds(start, end) -> float:
    return (end - start).total_seconds() if start and end else 0.0
