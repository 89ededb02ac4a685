"""The HTTP API: submit, status, cancel, transcripts, batches, the caller's account, admin listing.

Every answer is one of the models of ``app.core.schemas``; ``@operation`` tells the OpenAPI
document which (``app.openapi``).
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, request, stream_with_context, url_for
from pydantic import BaseModel
from rq.job import Job
from werkzeug.exceptions import RequestEntityTooLarge

from app.auth import add_response_headers, admin_only, authenticated, current_user
from app.core import batches, events, schemas
from app.core.errors import InvalidJSON, NotFound, UnknownFormat
from app.core.formats import FORMATS
from app.core.jobs import (
    cancel_job,
    describe_job,
    fetch_owned_job,
    poll_again,
    queue_for_tier,
    submit_transcription,
)
from app.core.services import wait_for_replicas
from app.core.validation import parse_submit, parse_upload
from app.extensions import services
from app.openapi import Parameter, operation
from app.upload import allow_upload_body, is_upload, read_upload

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Largest accepted request body; a submit body is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024


@bp.before_request
def _limit_body():
    request.max_content_length = MAX_BODY_BYTES
    if request.endpoint == "api.submit" and is_upload():
        allow_upload_body(services().settings)


bp.after_request(add_response_headers)


def document(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None):
    """An answer: ``model`` as JSON (fields that only some states have are left out in the others)."""
    return model.model_dump(mode="json", exclude_unset=True), status, headers or {}


def _read_body() -> bytes:
    """The request body, or ``413`` past ``MAX_BODY_BYTES``, whether it came with a length or chunked."""
    data = request.get_data()
    # A body without Content-Length (chunked) is read up to the limit and cut there without a word:
    # one more byte waiting behind it means the body is too large (not a JSON object cut short).
    if request.content_length is None and len(data) >= MAX_BODY_BYTES and request.input_stream.read(1):
        raise RequestEntityTooLarge()
    return data


def _json_body(example: str):
    _read_body()  # get_json reads the body read here
    try:
        payload = request.get_json(force=True, silent=True)
    except RecursionError:  # not a ValueError, so ``silent`` lets it through
        raise InvalidJSON("The request body is nested too deeply to be read.") from None
    if payload is None:
        raise InvalidJSON(f"The request body must be a JSON object, e.g. {example}.")
    return payload


IDEMPOTENCY_KEY = Parameter("Idempotency-Key", "header", (
    "Your id for this request (1-255 visible ASCII characters): the same key again returns the same job."),
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"})


@bp.post("/transcribe/async/submit")
@operation("Submit a video, or upload an audio file, for transcription", {200: schemas.Accepted, 202: schemas.Accepted},
           body=schemas.SubmitBody, upload=schemas.UploadForm, errors=(413, 422), parameters=(IDEMPOTENCY_KEY,))
@authenticated
def submit():
    """Accept a video's URL (JSON), or an audio file (`multipart/form-data`, part `file`, at most
    `MAX_UPLOAD_BYTES`); answer at once with the job's id and where to poll its status (202), or,
    when the same transcript was made lately, with a job already completed (200, `cached`)."""
    svc = services()
    if is_upload():
        form, _, upload = read_upload(svc.settings)
        transcription = parse_upload(form, upload, svc.settings)
    else:
        transcription = parse_submit(_json_body('{"youtube_url": "..."}'), svc.settings)
    user = current_user()
    queue = svc.queues[queue_for_tier(user.tier)]
    idempotency_key = request.headers.get("Idempotency-Key")
    submission = submit_transcription(queue, transcription, user, svc.settings, svc.quota, idempotency_key)
    job = submission.job
    wait_for_replicas(svc.redis, svc.settings, [job.id])  # a replay too: its job may still be unconfirmed
    headers = submission.quota.headers()
    if idempotency_key is not None:
        headers["Idempotent-Replayed"] = "true" if submission.replayed else "false"
    status_url = url_for("api.status", job_id=job.id)
    if submission.cached:
        done = schemas.Accepted(
            job_id=job.id, status="completed", queue=job.origin, status_url=status_url, cached=True,
            transcription_id=job.id, message=f"{transcription.what} was transcribed lately: the transcript is ready.")
        return document(done, 200, {"Location": status_url, **headers})
    accepted = schemas.Accepted(
        job_id=job.id, status="accepted", queue=job.origin, status_url=status_url,
        message=f"Transcription of {transcription.what} is queued on the {job.origin} queue.")
    return document(accepted, 202, {"Location": status_url, **headers})


@bp.get("/transcribe/async/status/<job_id>")
@operation("A job's status", {200: schemas.JobStatus}, errors=(404,))
@authenticated
def status(job_id: str):
    """Stage, progress and attempts; the result once completed, the error once failed.

    Until the job has ended, `Retry-After` says in how many seconds to ask again.
    """
    answer = describe_job(fetch_owned_job(services().redis, job_id, current_user()))
    seconds = poll_again(answer)
    return document(answer, headers={"Retry-After": str(seconds)} if seconds is not None else None)


#: Seconds between two comments on an open event stream with nothing to say (proxies close idle connections).
KEEP_ALIVE_SECONDS = 15
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@bp.get("/transcribe/async/status/<job_id>/events")
@operation("A job's live events (Server-Sent Events)", {200: {"text/event-stream": str}}, errors=(404,))
@authenticated
def status_events(job_id: str):
    """`stage`, `progress` and `segment` (the text as it is transcribed) as they happen, then one
    `completed`, `failed` or `cancelled`, and the stream ends. Each event has an `id`: reconnect with
    `Last-Event-ID` to get the events after it."""
    connection = services().redis
    job = fetch_owned_job(connection, job_id, current_user())
    after = request.headers.get("Last-Event-ID", "")
    stream = _event_stream(connection, job, after if _EVENT_ID.match(after) else "0")
    return Response(stream_with_context(stream), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _event_stream(connection, job, after: str):
    """The events of ``job`` after id ``after`` (``app.core.events``), until its final one.

    A job that has ended without a final event in its stream (one that ended before events existed, or
    whose stream expired) gets one made from its status."""
    yield "retry: 2000\n\n"
    block = None  # first, what is there already
    ended: schemas.JobStatus | None = None  # the job's status, once it has ended
    while True:
        found = events.read(connection, job.id, after, block)
        for event_id, event, data in found:
            after = event_id
            yield _sse(event, data, event_id)
            if event in events.FINAL:
                return
        if ended is not None:  # its events read after its end, and none was final
            final = ended.model_dump(mode="json", include={"status", "result", "error"}, exclude_none=True)
            yield _sse(ended.status, final)
            return
        if not found:
            current = describe_job(Job.fetch(job.id, connection=connection))
            if current.status not in ("pending", "processing"):
                ended, block = current, None  # read once more: its final event may be just written
                continue
            if block is not None:
                yield ": keep-alive\n\n"
        block = KEEP_ALIVE_SECONDS * 1000


def _sse(event: str, data: dict, event_id: str | None = None) -> str:
    """One Server-Sent Event; its data is one line of JSON."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@bp.delete("/transcribe/async/cancel/<job_id>")
@operation("Cancel a job", {200: schemas.CancelAnswer, 202: schemas.CancelAnswer}, errors=(404, 409))
@authenticated
def cancel(job_id: str):
    """A queued job never runs (200, cancelled); a running one is being stopped (202, processing)."""
    svc = services()
    job = fetch_owned_job(svc.redis, job_id, current_user())
    status = cancel_job(svc.redis, job, svc.settings)
    if status == "cancelled":
        return document(schemas.CancelAnswer(job_id=job.id, status="cancelled", message="The job is cancelled."))
    return document(schemas.CancelAnswer(job_id=job.id, status=status, message="The running job is being stopped."),
                    202)


FORMAT = Parameter("format", "query", "json (default), txt, srt or vtt.",
                   {"type": "string", "enum": list(FORMATS), "default": "json"})


@bp.get("/transcriptions/<transcription_id>")
@operation("A transcript", {200: {"application/json": schemas.Transcript, "text/plain": str,
                                  "application/x-subrip": str, "text/vtt": str}},
           errors=(400, 404), parameters=(FORMAT,))
@authenticated
def transcription(transcription_id: str):
    """The transcript as JSON, plain text (a segment a line), SRT or WebVTT subtitles."""
    fmt = request.args.get("format", "json").lower()
    if fmt not in FORMATS:
        raise UnknownFormat(f"Format {fmt!r} is not offered; choose one of: {', '.join(FORMATS)}.")
    record = services().transcripts.get(transcription_id)
    user = current_user()
    if record is None or (record.get("user_id") != user.id and not user.is_admin):
        raise NotFound(f"No transcription {transcription_id!r}.")
    content_type, render = FORMATS[fmt]
    return Response(render(record), content_type=content_type)


@bp.post("/transcribe/async/batch")
@operation("Submit several videos", {202: schemas.BatchAccepted}, body=schemas.BatchBody)
@authenticated
def submit_batch():
    """Each video becomes its own job on the batch queue; one quota unit each, all or none."""
    svc = services()
    user = current_user()
    batch = batches.parse_batch(_json_body('{"videos": [{"youtube_url": "..."}]}'), svc.settings, user)
    submitted = batches.submit_batch(svc.queues["batch"], batch, user, svc.settings, svc.quota)
    record = submitted["record"]
    wait_for_replicas(svc.redis, svc.settings, record["job_ids"], batch_id=record["batch_id"])
    status_url = url_for("api.batch_status", batch_id=record["batch_id"])
    accepted = schemas.BatchAccepted(
        batch_id=record["batch_id"], status="accepted", queue="batch", total=len(batch.videos),
        job_ids=record["job_ids"], status_url=status_url,
        message=f"{len(batch.videos)} videos are queued on the batch queue.")
    return document(accepted, 202, {"Location": status_url, **submitted["quota"].headers()})


@bp.get("/transcribe/async/batch/<batch_id>")
@operation("A batch's progress and each video's status", {200: schemas.BatchStatus}, errors=(404,))
@authenticated
def batch_status(batch_id: str):
    connection = services().redis
    return document(batches.describe_batch(connection, batches.fetch_owned_batch(connection, batch_id,
                                                                                  current_user())))


@bp.delete("/transcribe/async/batch/<batch_id>")
@operation("Cancel a batch's videos that have not ended", {200: schemas.BatchCancelled}, errors=(404,))
@authenticated
def batch_cancel(batch_id: str):
    svc = services()
    record = batches.fetch_owned_batch(svc.redis, batch_id, current_user())
    cancelled = batches.cancel_batch(svc.redis, record, svc.settings)
    return document(schemas.BatchCancelled(
        batch_id=batch_id, cancelled=cancelled,
        message=f"{cancelled} videos that had not ended are cancelled or being stopped."))


@bp.get("/me")
@operation("The key's user, tier and usage", {200: schemas.Me})
@authenticated
def me():
    """Who the key belongs to, and where the user stands this month."""
    svc = services()
    user = current_user()
    quota = svc.quota.usage(user)
    return document(schemas.Me(
        id=user.id, email=user.email, tier=user.tier, role=user.role, quota=quota.document(),
        rate_limit_per_minute=svc.settings.rate_limit_for(user.tier),
        max_video_duration=svc.settings.max_duration_for(user.tier), queue=queue_for_tier(user.tier),
    ), headers=quota.headers())


@bp.get("/admin/users")
@operation("Every user with this month's usage (admins only)", {200: schemas.AdminUsers}, errors=(403,))
@admin_only
def admin_users():
    svc = services()
    return document(schemas.AdminUsers(users=[
        schemas.AdminUser(id=user.id, email=user.email, tier=user.tier, role=user.role, quota_override=user.quota,
                          created_at=schemas.from_epoch(user.created_at), quota=svc.quota.usage(user).document(),
                          keys=len(svc.users.keys(user.id)))
        for user in svc.users.all()]))
