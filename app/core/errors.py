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


# --- HTTP API errors: each class's docstring says when (docs/api.md lists them from here) -------


class BadRequest(YtcaptionError):
    """The request is not valid."""

    status = 400
    code = "bad_request"
    default_message = "The request is not valid."


class InvalidJSON(BadRequest):
    """The body is not a JSON object."""

    code = "invalid_json"
    default_message = "The request body must be a JSON object."


class ValidationFailed(BadRequest):
    """A field is missing, of the wrong type, or unknown."""

    code = "validation_error"


class InvalidURL(BadRequest):
    """Not an http(s) URL, credentials in it, no YouTube video id in a YouTube URL, or a `callback_url` whose host
    does not resolve."""

    code = "invalid_url"


class HostNotAllowed(BadRequest):
    """The host is neither YouTube's nor allowed by `ALLOWED_URL_HOSTS` (or resolves to a private address); a
    `callback_url` on a private address or a port other than the default, unless `WEBHOOK_ALLOWED_HOSTS` lists it."""

    code = "host_not_allowed"


class PlaylistNotSupported(BadRequest):
    """A playlist URL: submit one video at a time (or a batch)."""

    code = "playlist_not_supported"


class ChannelNotSupported(BadRequest):
    """A channel URL."""

    code = "channel_not_supported"


class UnknownModel(BadRequest):
    """The model is not one this server offers (`WHISPER_ALLOWED_MODELS`)."""

    code = "unknown_model"


class UnknownLanguage(BadRequest):
    """Not a language Whisper knows, or not English for an `.en` model."""

    code = "unknown_language"


class CannotTranslate(BadRequest):
    """`translate` asked of an English-only (`.en`) model: the message names the models that can."""

    code = "model_cannot_translate"


class MissingFile(BadRequest):
    """`multipart/form-data` without a `file` part, or an empty one."""

    code = "missing_file"
    default_message = "Send the audio as the 'file' part of a multipart/form-data body."


class InvalidParameter(BadRequest):
    """`/v1/audio/*`: a form field OpenAI's API has not, or a value it does not take; `param` names the field."""

    code = "invalid_value"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class UploadTooLarge(YtcaptionError):
    """The uploaded file (or the request body) is larger than `MAX_UPLOAD_BYTES`."""

    status = 413
    code = "upload_too_large"


class UnknownFormat(BadRequest):
    """A transcript format other than json, txt, srt or vtt."""

    code = "unknown_format"


class InvalidIdempotencyKey(BadRequest):
    """`Idempotency-Key` is empty, longer than 255 characters or not visible ASCII."""

    code = "invalid_idempotency_key"
    default_message = "Idempotency-Key must be 1 to 255 visible ASCII characters."


class IdempotencyKeyReused(YtcaptionError):
    """The same `Idempotency-Key` with a different request."""

    status = 422
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used for a different request."


class Unauthorized(YtcaptionError):
    """No API key, or not a valid one (or revoked)."""

    status = 401
    code = "unauthorized"
    default_message = "A valid API key is required: send 'Authorization: Bearer <api_key>'."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="ytcaption"'})


class Forbidden(YtcaptionError):
    """An admin endpoint called with a key that is not an admin's."""

    status = 403
    code = "forbidden"
    default_message = "This needs an admin API key."


class CrossSiteRequest(Forbidden):
    """A dashboard action (requeue, delete, empty, compact) whose `Origin`, or `Referer` without one, is not
    this server: a page on another site may have made an admin's browser send it."""

    code = "cross_site_request"
    default_message = ("Dashboard actions are taken from the dashboard's own pages: this request's Origin (or "
                       "Referer) is missing or another site's.")


class MetricsClosed(Forbidden):
    """`/metrics` on a server with neither `METRICS_TOKEN` nor `METRICS_PUBLIC=true`: its operator must choose."""

    code = "metrics_closed"
    default_message = ("/metrics is closed: the operator must set METRICS_TOKEN (and scrape with 'Authorization: "
                       "Bearer <token>'), or METRICS_PUBLIC=true to open it to anyone who can reach the API.")


class QuotaExceeded(YtcaptionError):
    """The month's quota is used up; the body's `quota` says the limit and `resets_at`."""

    status = 429
    code = "quota_exceeded"


class RateLimited(YtcaptionError):
    """Too many requests this minute with this key; retry after `Retry-After` seconds."""

    status = 429
    code = "rate_limited"


class NotFound(YtcaptionError):
    """No such job, batch or transcript, or not the caller's (the same answer)."""

    status = 404
    code = "not_found"
    default_message = "Not found."


class JobAlreadyFinished(YtcaptionError):
    """Cancelling a job that already completed or failed."""

    status = 409
    code = "job_finished"


class JobNotFailed(YtcaptionError):
    """A dashboard requeue of a job that is not (or no longer) failed."""

    status = 409
    code = "job_not_failed"
    default_message = "Only a failed job can be requeued; this one is not (or no longer) failed."


class ServiceUnavailable(YtcaptionError):
    """Redis is unreachable; retry after `Retry-After` seconds."""

    status = 503
    code = "service_unavailable"
    default_message = "The job store is unreachable; try again shortly."

    def __init__(self, message: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class NotReplicated(YtcaptionError):
    """With `REDIS_WAIT_REPLICAS`: the job was stored on the Redis master but not confirmed by enough replicas
    in time (or Redis failed meanwhile); the body's `job_id` (a batch: `batch_id`, `job_ids`) says which to
    look up."""

    status = 503
    code = "not_replicated"

    def __init__(self, message: str, details: dict, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)}, details=details)


class UserAlreadyExists(YtcaptionError):
    """A user with this email exists already (CLI)."""

    status = 409
    code = "user_exists"


# --- Job errors: a failed job's error.type and error.message (docs/api.md lists them from here) --


class JobError(YtcaptionError):
    """A job could not produce a transcript."""

    code = "job_failed"
    #: A transient error may succeed if the job is run again later: the job is retried.
    transient = False


class TransientDownloadError(JobError):
    """A network error, HTTP 5xx or 429 (YouTube's 429 is `youtube_bot_check`), or an empty answer while
    downloading."""

    code = "download_failed"
    default_message = "The media could not be downloaded (a network or server error)."
    transient = True


class VideoUnavailable(JobError):
    """Removed (by its uploader, for a policy or a copyright claim, or with its account), not found (HTTP
    404…), or unavailable for a reason the site does not give: it will not download, however often tried."""

    code = "video_unavailable"
    default_message = "The video is unavailable (removed or not found); retrying will not help."


class YouTubeBotCheck(JobError):
    """YouTube refuses this server, not the video: "Sign in to confirm you're not a bot", a captcha, a rate
    limit, or HTTP 403/429 from its hosts. Retried (through the next of `YTDLP_PROXIES`, if any); the
    operator fixes it with cookies, proxies or PO tokens."""

    code = "youtube_bot_check"
    default_message = ("YouTube refused this server as a bot (\"Sign in to confirm you're not a bot\"); "
                       "the job is retried. Operators: see README, Running against real YouTube "
                       "(YTDLP_COOKIES_FILE, YTDLP_PROXIES, PO tokens).")
    transient = True


class AgeRestricted(VideoUnavailable):
    """YouTube shows the video only to signed-in adults (a `YTDLP_COOKIES_FILE` of such an account can)."""

    code = "age_restricted"
    default_message = "The video is age-restricted: YouTube shows it only to signed-in adults."


class PrivateVideo(VideoUnavailable):
    """The video is private: only the accounts its uploader chose can watch it."""

    code = "private_video"
    default_message = "The video is private."


class MembersOnly(VideoUnavailable):
    """The video is for the channel's paying members only."""

    code = "members_only"
    default_message = "The video is available to the channel's members only."


class GeoBlocked(VideoUnavailable):
    """The video is not available in the country this server (or its proxy) is in."""

    code = "geo_blocked"
    default_message = "The video is not available in this server's country."


class LiveNotSupported(JobError):
    """A live stream not over, a stream or premiere still to come, or one just ended whose recording YouTube
    is still processing: refused before any download; submit the video again once its recording is published."""

    code = "live_not_supported"
    default_message = "Live streams cannot be transcribed; submit the video once the stream has ended."


class NoCaptions(JobError):
    """`source=captions`, and the video has no manual captions in the requested language."""

    code = "no_captions"
    default_message = "The video has no captions in the requested language (automatic captions are not used)."


class UnsupportedURL(JobError):
    """No media at this URL (or a list of videos)."""

    code = "unsupported_url"
    default_message = "No media could be found at this URL."


class VideoTooLong(JobError):
    """Longer than the tier's limit: checked from the metadata before downloading, and from the file."""

    code = "video_too_long"


class FileTooLarge(JobError):
    """Larger than `MAX_DOWNLOAD_BYTES`: checked from the metadata before downloading, and while downloading."""

    code = "file_too_large"


class NoAudio(JobError):
    """The media has no audio track."""

    code = "no_audio"
    default_message = "The media has no audio track."


class UploadExpired(JobError):
    """The uploaded audio was deleted before a worker took the job (it waited longer than `RESULT_TTL`)."""

    code = "upload_expired"
    default_message = "The uploaded audio is no longer stored (the job waited too long); upload it again."


class UndecodableMedia(JobError):
    """The downloaded or uploaded file is not audio that can be decoded."""

    code = "undecodable_media"
    default_message = "The media could not be decoded as audio."


class ModelUnavailable(JobError):
    """The worker could not load the model (the worker's log says why)."""

    code = "model_unavailable"


class EngineUnavailable(JobError):
    """The worker's engine host stopped; the job is retried."""

    code = "engine_unavailable"
    default_message = "The transcription engine of this worker stopped; the job can be run again."
    transient = True


class RedirectNotAllowed(JobError):
    """The URL redirected to a host the URL policy does not allow (the target was not contacted)."""

    code = "redirect_not_allowed"


class JobCancelled(JobError):
    """Cancelled while running (when the worker did not stop it first)."""

    code = "cancelled"
    default_message = "The job was cancelled."


class WorkerLost(JobError):
    """The process running the job, or its whole worker, died; retried while attempts remain."""

    code = "worker_lost"
    default_message = "The worker running the job died; the job is run again if it has attempts left."
    transient = True


class JobTimedOut(JobError):
    """The job ran past its timeout (`JOB_TIMEOUT_FLOOR` + `JOB_TIMEOUT_FACTOR` × duration)."""

    code = "job_timeout"


class UnexpectedJobError(JobError):
    """A bug or an error nobody foresaw; the worker's log has the traceback."""

    code = "internal_error"


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
