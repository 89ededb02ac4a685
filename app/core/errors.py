"""The one error hierarchy of ytcaption.

Every error carries a stable machine-readable ``code`` and, for the HTTP edge, a ``status``.
The API renders any of them as ``{"error": code, "message": sentence}``; jobs raise the
``JobError`` family so that RQ records the failure and the status endpoint can show
``error.type`` (the code) and ``error.message``.
"""

from __future__ import annotations

import re


class YtcaptionError(Exception):
    """Base of every error ytcaption raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    default_message: str = "Something went wrong on our side."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None,
                 details: dict | None = None) -> None:
        self.message = message or self.default_message
        self.headers = headers or {}
        #: Extra fields of the JSON error body (e.g. a quota's limit and reset time).
        self.details = details or {}
        super().__init__(self.message)


class ConfigurationError(YtcaptionError):
    """A setting is missing or invalid; raised at start-up."""

    code = "configuration_error"


# --- HTTP API errors -------------------------------------------------------------------------


class BadRequest(YtcaptionError):
    status = 400
    code = "bad_request"
    default_message = "The request is not valid."


class InvalidJSON(BadRequest):
    code = "invalid_json"
    default_message = "The request body must be a JSON object."


class ValidationFailed(BadRequest):
    code = "validation_error"


class InvalidURL(BadRequest):
    code = "invalid_url"


class HostNotAllowed(BadRequest):
    code = "host_not_allowed"


class PlaylistNotSupported(BadRequest):
    code = "playlist_not_supported"


class ChannelNotSupported(BadRequest):
    code = "channel_not_supported"


class UnknownModel(BadRequest):
    code = "unknown_model"


class UnknownLanguage(BadRequest):
    code = "unknown_language"


class UnknownFormat(BadRequest):
    code = "unknown_format"


class InvalidIdempotencyKey(BadRequest):
    code = "invalid_idempotency_key"
    default_message = "Idempotency-Key must be 1 to 255 visible ASCII characters."


class IdempotencyKeyReused(YtcaptionError):
    status = 422
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used for a different request."


class Unauthorized(YtcaptionError):
    status = 401
    code = "unauthorized"
    default_message = "A valid API key is required: send 'Authorization: Bearer <api_key>'."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="ytcaption"'})


class Forbidden(YtcaptionError):
    status = 403
    code = "forbidden"
    default_message = "This needs an admin API key."


class QuotaExceeded(YtcaptionError):
    status = 429
    code = "quota_exceeded"


class RateLimited(YtcaptionError):
    status = 429
    code = "rate_limited"


class NotFound(YtcaptionError):
    status = 404
    code = "not_found"
    default_message = "Not found."


class JobAlreadyFinished(YtcaptionError):
    status = 409
    code = "job_finished"


class ServiceUnavailable(YtcaptionError):
    status = 503
    code = "service_unavailable"
    default_message = "The job store is unreachable; try again shortly."

    def __init__(self, message: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


# --- Job errors: recorded on the failed job as error.type / error.message ---------------------


class JobError(YtcaptionError):
    """A job could not produce a transcript."""

    code = "job_failed"
    #: A transient error may succeed if the job is run again later.
    transient = False


class TransientDownloadError(JobError):
    code = "download_failed"
    default_message = "The media could not be downloaded (a network or server error)."
    transient = True


class VideoUnavailable(JobError):
    code = "video_unavailable"
    default_message = "The video is unavailable (private, removed or not found)."


class UnsupportedURL(JobError):
    code = "unsupported_url"
    default_message = "No media could be found at this URL."


class VideoTooLong(JobError):
    code = "video_too_long"


class NoAudio(JobError):
    code = "no_audio"
    default_message = "The media has no audio track."


class UndecodableMedia(JobError):
    code = "undecodable_media"
    default_message = "The downloaded media could not be decoded as audio."


class ModelUnavailable(JobError):
    code = "model_unavailable"


class EngineUnavailable(JobError):
    code = "engine_unavailable"
    default_message = "The transcription engine of this worker stopped; the job can be run again."
    transient = True


class RedirectNotAllowed(JobError):
    code = "redirect_not_allowed"


class JobCancelled(JobError):
    code = "cancelled"
    default_message = "The job was cancelled."


class UserAlreadyExists(YtcaptionError):
    status = 409
    code = "user_exists"


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
# An absolute filesystem path: a slash not preceded by a word character, ':' or '/' (so not a URL's path).
_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.+-]+/)*[\w.+-]+")


def public_message(message: str) -> str:
    """``message`` without what a client must not see: errno numbers and paths on the worker."""
    return _PATH.sub("<path>", _ERRNO.sub("", message))


def job_error(code: str, message: str) -> JobError:
    """Rebuild a job error from its code (errors cross process boundaries as code + message)."""
    classes = {cls.code: cls for cls in _subclasses(JobError)}
    return classes.get(code, JobError)(message)


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found
