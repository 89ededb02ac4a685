"""The OpenAI-compatible audio API: ``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``.

What OpenAI's SDKs and the tools built on them send, answered as OpenAI does: the same API keys
(``Authorization: Bearer``), quota and lanes as the rest of the API; errors in OpenAI's shape
(``app.error_handlers``). A request is an ordinary job (its status, cancel, the dashboard and the
metrics see it), which the request waits for, up to ``SYNC_WAIT_TIMEOUT``: woken by Redis when the
job's record changes, holding a greenlet of gunicorn's gevent worker, not a process. A job still
running then is answered 202 with its id and status URL, like the submit endpoint's.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, g, request, url_for
from rq.job import Job

from app.auth import add_response_headers, authenticated, current_user
from app.core import schemas
from app.core.errors import InvalidParameter, NotFound, YtcaptionError
from app.core.formats import to_srt, to_vtt
from app.core.jobs import describe_job, public_status, queue_for_tier, submit_transcription, wait_for_end
from app.core.languages import AUTO, LANGUAGE_NAMES
from app.core.services import wait_for_replicas
from app.core.settings import Settings
from app.core.validation import parse_upload
from app.extensions import services
from app.upload import allow_upload_body, read_upload

bp = Blueprint("openai", __name__, url_prefix="/v1")
bp.after_request(add_response_headers)


@bp.after_request
def _job_header(response):
    """``X-Job-Id`` on every answer of a request that made a job, errors included: the job is an ordinary
    one, which the rest of the API can look up (or cancel)."""
    if "job_id" in g:
        response.headers["X-Job-Id"] = g.job_id
    return response


#: OpenAI's model name, which its clients send by default: this server's default model.
OPENAI_MODEL = "whisper-1"
#: ``created`` of every model: Whisper's release (2022-09-21), the age of the weights this server serves.
WHISPER_RELEASED = int(datetime(2022, 9, 21, tzinfo=timezone.utc).timestamp())
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
#: The form fields both endpoints read besides ``file`` and ``timestamp_granularities[]``; any other is refused
#: (``stream`` only as false: answers are whole; ``language`` on a translation: the language spoken;
#: ``callback_url``, ytcaption's own: a webhook when the job ends, for a request that answers 202).
_FIELDS = {"model", "language", "prompt", "response_format", "temperature", "stream", "callback_url"}
#: A job's failure that is the request's fault: its status code here (other failures are the server's, 500).
_CLIENT_FAILURES = {"undecodable_media": 400, "no_audio": 400, "video_too_long": 400, "cancelled": 409}


class TranscriptionFailed(YtcaptionError):
    """The request's job failed: its error, with the status code that fits it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = _CLIENT_FAILURES.get(code, 500)


@bp.before_request
def _limit_body():
    allow_upload_body(services().settings)


@bp.get("/models")
@authenticated
def models():
    """The models this server offers, ``whisper-1`` (its default) first."""
    return {"object": "list", "data": [_model(name) for name in _model_names(services().settings)]}


@bp.get("/models/<path:model_id>")
@authenticated
def model(model_id: str):
    if model_id not in _model_names(services().settings):
        raise NotFound(f"The model {model_id!r} does not exist here.")
    return _model(model_id)


@bp.post("/audio/transcriptions")
@authenticated
def transcriptions():
    """Speech to text in the language spoken."""
    return _transcribe("transcribe")


@bp.post("/audio/translations")
@authenticated
def translations():
    """Speech in any language to English text (a multilingual model)."""
    return _transcribe("translate")


def _transcribe(task: str):
    svc = services()
    settings = svc.settings
    form, lists, upload = read_upload(settings)
    response_format, granularities, fields = _read_form(form, lists, task, settings)
    transcription = parse_upload(fields, upload, settings)
    user = current_user()
    queue = svc.queues[queue_for_tier(user.tier)]
    submission = submit_transcription(queue, transcription, user, settings, svc.quota,
                                      request.headers.get("Idempotency-Key"))
    job = submission.job
    g.job_id = job.id
    wait_for_replicas(svc.redis, settings, [job.id])
    headers = submission.quota.headers()
    status_url = url_for("api.status", job_id=job.id)
    if not wait_for_end(svc.redis, job, settings.sync_wait_timeout):
        accepted = schemas.Accepted(
            job_id=job.id, status="accepted", queue=job.origin, status_url=status_url,
            message=f"The job has not ended after {settings.sync_wait_timeout:g} s (SYNC_WAIT_TIMEOUT); "
                    f"poll its status, then fetch the transcript.")
        return accepted.model_dump(mode="json"), 202, {"Location": status_url, **headers}

    job = Job.fetch(job.id, connection=svc.redis)
    status = public_status(job)
    if status == "cancelled":
        raise TranscriptionFailed("cancelled", "The job was cancelled.")
    if status != "completed":
        error = describe_job(job).error
        raise TranscriptionFailed(error.type, error.message)
    record = svc.transcripts.get(job.id)
    if record is None:  # kept TRANSCRIPT_TTL, read within moments: only if Redis lost it
        raise YtcaptionError("The transcript was stored and then lost; submit the file again.")
    return _render(record, response_format, granularities, headers)


def _read_form(form: dict[str, str], lists: list[tuple[str, str]], task: str,
               settings: Settings) -> tuple[str, set[str], dict[str, Any]]:
    """OpenAI's fields as ytcaption's upload form: the response format, the timestamp granularities, the fields."""
    unknown = sorted(set(form) - _FIELDS) + sorted({name for name, _ in lists} - {"timestamp_granularities[]"})
    if unknown:
        raise InvalidParameter(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
    if form.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidParameter("Streaming is not offered: leave 'stream' out (or false).", "stream")
    response_format = form.get("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise InvalidParameter(f"'{response_format}' is not one of {list(RESPONSE_FORMATS)} - 'response_format'.",
                               "response_format")
    granularities = {value for _, value in lists}
    if granularities - set(GRANULARITIES):
        raise InvalidParameter(f"timestamp_granularities[] takes {' and '.join(GRANULARITIES)}.",
                               "timestamp_granularities[]")
    if "temperature" in form:
        try:
            temperature = float(form["temperature"])
        except ValueError:
            temperature = math.nan
        if not 0 <= temperature <= 1:
            raise InvalidParameter("'temperature' takes a number from 0 to 1.", "temperature")
    model = form.get("model") or OPENAI_MODEL
    fields: dict[str, Any] = {
        "model": settings.default_model_name if model == OPENAI_MODEL else model,
        "language": form.get("language") or AUTO,
        "task": task,
        "word_timestamps": "word" in granularities,
    }
    fields.update({name: form[name] for name in ("prompt", "temperature", "callback_url") if name in form})
    return response_format, granularities, fields


def _render(record: Mapping[str, Any], response_format: str, granularities: set[str], headers: dict[str, str]):
    segments = record["segments"]
    text = record["text"]
    if response_format == "text":
        return Response(text + "\n", content_type="text/plain; charset=utf-8", headers=headers)
    if response_format == "srt":
        return Response(to_srt(segments), content_type="text/plain; charset=utf-8", headers=headers)
    if response_format == "vtt":
        return Response(to_vtt(segments), content_type="text/vtt; charset=utf-8", headers=headers)
    usage = {"type": "duration", "seconds": math.ceil(record["duration"])}
    words = [{"word": word["word"].strip(), "start": word["start"], "end": word["end"]}
             for segment in segments for word in segment.get("words") or ()]
    if response_format == "json":
        return {"text": text, **({"words": words} if "word" in granularities else {}), "usage": usage}, 200, headers
    translated = record.get("task") == "translate"
    document: dict[str, Any] = {
        "task": "translate" if translated else "transcribe",
        "language": "english" if translated else LANGUAGE_NAMES.get(record["language"], record["language"]),
        "duration": record["duration"],
        "text": text,
    }
    if "segment" in granularities or not granularities:
        temperature = record.get("temperature") or 0.0
        document["segments"] = [_segment(segment, temperature) for segment in segments]
    if "word" in granularities:
        document["words"] = words
    document["usage"] = usage
    return document, 200, headers


def _segment(segment: Mapping[str, Any], temperature: float) -> dict[str, Any]:
    """A segment as OpenAI's verbose_json has it. ytcaption does not keep token ids (``tokens`` is empty);
    ``avg_logprob`` and ``no_speech_prob`` are those of the 30-second window the segment was decoded in."""
    encoded = segment["text"].encode()
    return {
        "id": segment["id"],
        "seek": round(segment["start"] * 100),  # its start in Whisper's 10 ms frames
        "start": segment["start"],
        "end": segment["end"],
        "text": segment["text"],
        "tokens": [],
        "temperature": temperature,
        "avg_logprob": segment.get("avg_logprob"),
        "compression_ratio": round(len(encoded) / len(zlib.compress(encoded)), 4) if encoded else 0.0,
        "no_speech_prob": segment.get("no_speech_prob"),
    }


def _model_names(settings: Settings) -> list[str]:
    return [OPENAI_MODEL, *sorted(settings.allowed_models)]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": WHISPER_RELEASED, "owned_by": "ytcaption"}
