"""The HTTP API: submit, status, cancel, transcripts, batches, the caller's account, admin listing."""

from __future__ import annotations

from flask import Blueprint, Response, request, url_for

from app.core import batches
from app.auth import add_response_headers, admin_only, authenticated, current_user
from app.core.errors import InvalidJSON, NotFound, UnknownFormat
from app.core.formats import FORMATS
from app.core.jobs import cancel_job, describe_job, fetch_owned_job, queue_for_tier, submit_transcription
from app.extensions import services
from app.core.validation import parse_submit

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Largest accepted request body; a submit body is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024


@bp.before_request
def _limit_body():
    request.max_content_length = MAX_BODY_BYTES


bp.after_request(add_response_headers)


def _json_body(example: str):
    payload = request.get_json(force=True, silent=True)
    if payload is None:
        raise InvalidJSON(f"The request body must be a JSON object, e.g. {example}.")
    return payload


@bp.post("/transcribe/async/submit")
@authenticated
def submit():
    """Accept a video for transcription; answer at once with the job id."""
    svc = services()
    transcription = parse_submit(_json_body('{"youtube_url": "..."}'), svc.settings)
    user = current_user()
    queue = svc.queues[queue_for_tier(user.tier)]
    idempotency_key = request.headers.get("Idempotency-Key")
    submission = submit_transcription(queue, transcription, user, svc.settings, svc.quota, idempotency_key)
    job = submission.job
    headers = submission.quota.headers()
    if idempotency_key is not None:
        headers["Idempotent-Replayed"] = "true" if submission.replayed else "false"
    status_url = url_for("api.status", job_id=job.id)
    body = {
        "job_id": job.id,
        "status": "accepted",
        "queue": job.origin,
        "message": f"Transcription of {transcription.video.url} is queued on the {job.origin} queue.",
        "status_url": status_url,
    }
    return body, 202, {"Location": status_url, **headers}


@bp.get("/transcribe/async/status/<job_id>")
@authenticated
def status(job_id: str):
    job = fetch_owned_job(services().redis, job_id, current_user())
    return describe_job(job)


@bp.delete("/transcribe/async/cancel/<job_id>")
@authenticated
def cancel(job_id: str):
    svc = services()
    job = fetch_owned_job(svc.redis, job_id, current_user())
    status = cancel_job(svc.redis, job)
    if status == "cancelled":
        return {"job_id": job.id, "status": "cancelled", "message": "The job is cancelled."}
    return {"job_id": job.id, "status": status, "message": "The running job is being stopped."}, 202


@bp.get("/transcriptions/<transcription_id>")
@authenticated
def transcription(transcription_id: str):
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
@authenticated
def submit_batch():
    """Accept several videos; each becomes its own job on the batch queue."""
    svc = services()
    user = current_user()
    requests = batches.parse_batch(_json_body('{"videos": [{"youtube_url": "..."}]}'), svc.settings, user)
    submitted = batches.submit_batch(svc.queues["batch"], requests, user, svc.settings, svc.quota)
    record = submitted["record"]
    status_url = url_for("api.batch_status", batch_id=record["batch_id"])
    body = {"batch_id": record["batch_id"], "status": "accepted", "queue": "batch", "total": len(requests),
            "job_ids": record["job_ids"], "status_url": status_url,
            "message": f"{len(requests)} videos are queued on the batch queue."}
    return body, 202, {"Location": status_url, **submitted["quota"].headers()}


@bp.get("/transcribe/async/batch/<batch_id>")
@authenticated
def batch_status(batch_id: str):
    connection = services().redis
    return batches.describe_batch(connection, batches.fetch_owned_batch(connection, batch_id, current_user()))


@bp.delete("/transcribe/async/batch/<batch_id>")
@authenticated
def batch_cancel(batch_id: str):
    connection = services().redis
    record = batches.fetch_owned_batch(connection, batch_id, current_user())
    cancelled = batches.cancel_batch(connection, record)
    return {"batch_id": batch_id, "cancelled": cancelled,
            "message": f"{cancelled} videos that had not ended are cancelled or being stopped."}


@bp.get("/me")
@authenticated
def me():
    """Who the key belongs to, and where the user stands this month."""
    svc = services()
    user = current_user()
    quota = svc.quota.usage(user)
    body = {
        "id": user.id, "email": user.email, "tier": user.tier, "role": user.role,
        "quota": quota.to_dict(),
        "rate_limit_per_minute": svc.settings.rate_limit_for(user.tier),
        "max_video_duration": svc.settings.max_duration_for(user.tier),
        "queue": queue_for_tier(user.tier),
    }
    return body, 200, quota.headers()


@bp.get("/admin/users")
@admin_only
def admin_users():
    """Every user with this month's usage (admins only)."""
    svc = services()
    return {"users": [{**user.to_dict(), "quota": svc.quota.usage(user).to_dict(),
                       "keys": len(svc.users.keys(user.id))} for user in svc.users.all()]}
