"""Every document the API reads or writes, as a pydantic model.

The same models validate request bodies, shape the answers (views dump them with
``exclude_unset``, so a field given only in some states, like ``position``, is left out in the
others) and make the OpenAPI document (``app.openapi``). Times are ISO 8601 in UTC
(``2026-11-29T18:10:08.123456Z``) in every document.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from app.core.languages import AUTO, WHISPER_LANGUAGES

QueueName = Literal["express", "standard", "batch"]
Tier = Literal["free", "pro", "enterprise"]
JobState = Literal["pending", "processing", "completed", "failed", "cancelled"]
#: Where a transcript comes from: Whisper, or the video's own (manual) captions; ``auto``: captions if any.
Source = Literal["whisper", "captions", "auto"]
Stage = Literal["queued", "waiting_retry", "starting", "downloading", "transcribing", "storing", "completed",
                "failed", "cancelling", "cancelled"]


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC, as every document writes it."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


#: A moment, written as ISO 8601 in UTC with a ``Z``.
Timestamp = Annotated[AwareDatetime, PlainSerializer(iso, return_type=str, when_used="json"),
                      Field(json_schema_extra={"format": "date-time"})]


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Document(BaseModel):
    """An answer of the API: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class StoredDocument(BaseModel):
    """An answer built from a record a worker stored: fields it does not know are dropped."""

    model_config = ConfigDict(extra="ignore")


# --- requests --------------------------------------------------------------------------------


class EngineFields(Request):
    """What a request may ask of the engine (``app.core.options.EngineOptions``)."""

    task: Literal["transcribe", "translate"] = Field("transcribe", description=(
        "`translate`: write the speech, in any language, in English (multilingual models only)."))
    prompt: str | None = Field(None, max_length=2000, description=(
        "Text Whisper reads as if it came before the audio: names and spellings to follow, a style of punctuation."))
    temperature: float | None = Field(None, ge=0, le=1, description=(
        "Sampling temperature, 0 to 1 (default: the server's, 0 unless `WHISPER_TEMPERATURE_FALLBACK`). Higher is "
        "more random."))
    word_timestamps: bool = Field(False, description="Keep each word's start and end (`segments[].words`).")


def _callback_url():
    return Field(None, min_length=1, max_length=2048, json_schema_extra={"format": "uri"}, description=(
        "A URL to POST a signed event to once the job has ended (a batch: once all its videos have), "
        "per Standard Webhooks (docs/api.md#webhooks): a public host on its default port, or a host the "
        "operator allows."))


class SubmitBody(EngineFields):
    """A video to transcribe."""

    youtube_url: str = Field(min_length=1, max_length=2048, json_schema_extra={"format": "uri"}, description=(
        "A YouTube video URL in any common form, or a URL on a host the operator allows."),
        examples=["https://www.youtube.com/watch?v=jNQXAC9IVRw"])
    language: str = Field(AUTO, json_schema_extra={"enum": [AUTO, *sorted(WHISPER_LANGUAGES)]},
                          description="`auto` (detect), or an ISO 639-1 code Whisper knows (an `.en` model: "
                                      "`auto` or `en`).")
    model: str | None = Field(None, description="One of the models this server offers (default: its default model).")
    source: Source = Field("whisper", description=(
        "`whisper` (transcribe the audio), `captions` (the video's own manual captions; fails with `no_captions` "
        "when it has none in the language) or `auto` (its manual captions when it has them, else Whisper). "
        "Automatic captions are never used. The captions' language: `language` if given, else the video's "
        "language, else its only track, else English."))
    cache: bool = Field(True, description=(
        "`false`: run afresh, even if the same transcript was made lately (the result cache) or is being made "
        "(in-flight sharing); its transcript then answers later submits."))
    callback_url: str | None = _callback_url()


class UploadForm(EngineFields):
    """The fields that come with an uploaded `file` (`multipart/form-data`), as text."""

    model_config = ConfigDict(extra="forbid", strict=False)

    language: str = Field(AUTO, description="As for a URL.")
    model: str | None = Field(None, description="As for a URL.")
    cache: bool = Field(True, description="As for a URL (the same audio: the same SHA-256).")
    callback_url: str | None = _callback_url()


class BatchBody(Request):
    """Several videos, each its own job on the batch queue."""

    videos: list[SubmitBody] = Field(min_length=1, description="At most the tier's `BATCH_MAX_*` videos.")
    callback_url: str | None = _callback_url()


# --- answers ----------------------------------------------------------------------------------


class QuotaDocument(Document):
    limit: int
    used: int
    remaining: int
    period: str = Field(description="The calendar month (UTC), `YYYY-MM`.")
    resets_at: Timestamp


class Error(Document):
    """Every error: a stable code and a sentence."""

    error: str = Field(description="A stable, machine-readable code, e.g. `invalid_url`.")
    message: str = Field(description="What went wrong, in one sentence.")
    quota: QuotaDocument | None = Field(None, description="With `quota_exceeded`: the month's quota.")
    job_id: str | None = Field(None, description="With `not_replicated`: the job that was accepted by the master.")
    batch_id: str | None = Field(None, description="With `not_replicated` for a batch: the batch.")
    job_ids: list[str] | None = Field(None, description="With `not_replicated` for a batch: its jobs.")


class Accepted(Document):
    job_id: str
    status: Literal["accepted", "completed"] = Field(description=(
        "`completed`: answered from the result cache (`cached`), with `transcription_id`; the status URL has "
        "the rest."))
    queue: QueueName
    message: str
    status_url: str
    cached: bool | None = Field(None, description="`true`: the transcript was made lately for the same request.")
    transcription_id: str | None = Field(None, description="When completed: this job's own copy of the transcript.")


class JobErrorDocument(StoredDocument):
    type: str = Field(description="e.g. `video_unavailable`, `download_failed`, `worker_lost` (see docs/api.md).")
    message: str


class Timings(StoredDocument):
    queued: float
    download: float
    model_load: float
    transcribe: float
    store: float


class JobResult(StoredDocument):
    transcription_id: str
    processing_time: float
    total_segments: int
    pieces: int = Field(1, description=(
        "Pieces the recording was transcribed in: more than 1 when it was long enough to be shared among "
        "workers (`CHUNK_THRESHOLD_SECONDS`)."))
    speech_detected: bool = Field(True, description=(
        "False when the voice-activity filter heard no speech: the transcript is empty, and no words were invented."))
    language: str
    duration: float
    model: str | None = Field(description="The Whisper model; null when the transcript is the video's captions.")
    title: str | None
    source: Literal["whisper", "captions"] = Field("whisper", description="Where the transcript came from.")
    channel: str | None = Field(None, description="The video's channel (or uploader), if its page says.")
    timings: Timings


class WebhookAttempt(StoredDocument):
    """One attempt to deliver a webhook's event."""

    at: Timestamp
    status: int | None = Field(description=(
        "The HTTP status answered (of the last hop, when redirected); null when none came (a timeout, a refused "
        "connection, a URL refused by the policy before the request)."))
    latency_ms: int = Field(description="Milliseconds the attempt took, every hop together.")
    error: str | None = Field(description="Why it failed, in a few words; null once delivered.")
    url: str | None = Field(None, description="The last hop's URL, when the callback URL redirected.")


class WebhookDelivery(StoredDocument):
    """The webhook of a job or batch submitted with a `callback_url`."""

    url: str
    event_id: str | None = Field(description="The event's `webhook-id`; null until the job (or batch) has ended.")
    state: Literal["pending", "delivered", "failed"] = Field(description=(
        "`pending` until delivered (the job runs, or the event waits for its next attempt), `delivered` (a 2xx), "
        "or `failed` for good (a 4xx other than 408 and 429, a refused URL or redirect, or retries spent)."))
    attempts: list[WebhookAttempt]


class JobStatus(Document):
    """A job as its owner sees it."""

    job_id: str
    status: JobState
    stage: Stage
    progress: int = Field(ge=0, le=100)
    queue: QueueName
    youtube_url: str | None
    filename: str | None = Field(None, description="The uploaded file's name (a job of an uploaded file).")
    video_id: str | None
    language: str
    model: str | None
    source: Source = Field("whisper", description="The `source` asked for; `result.source` says which was used.")
    created_at: Timestamp | None
    started_at: Timestamp | None
    ended_at: Timestamp | None
    attempt: int = Field(description="The attempt running now, the next one while waiting for a retry, or the last.")
    max_attempts: int
    position: int | None = Field(None, description="While pending: jobs ahead of it in its queue.")
    next_retry_at: Timestamp | None = Field(None, description="While waiting for a retry.")
    last_error: JobErrorDocument | None = Field(None, description="Pending or processing after a failed attempt.")
    result: JobResult | None = Field(None, description="Once completed.")
    error: JobErrorDocument | None = Field(None, description="Once failed.")
    cached: bool | None = Field(None, description=(
        "`true`: completed at submit from the result cache, by no worker (docs/api.md#result-cache)."))
    webhook: WebhookDelivery | None = Field(None, description="With a `callback_url`: its delivery.")


class CancelAnswer(Document):
    job_id: str
    status: Literal["cancelled", "processing"]
    message: str


class Word(StoredDocument):
    word: str
    start: float
    end: float
    probability: float


class Segment(StoredDocument):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = Field(None, description="With `word_timestamps`: each word and its time.")


class Chapter(StoredDocument):
    title: str
    start: float
    end: float
    first_segment: int | None = Field(description=(
        "The id of the chapter's first segment: a segment belongs to the chapter it starts in. "
        "Null when no segment starts in the chapter."))
    last_segment: int | None = Field(description="The id of its last segment (its segments are "
                                                 "`segments[first_segment:last_segment + 1]`).")


class Transcript(StoredDocument):
    """A transcript (``format=json``)."""

    transcription_id: str
    job_id: str
    source_url: str | None = Field(description="The URL transcribed; null for an uploaded file.")
    filename: str | None = Field(None, description="The uploaded file's name.")
    video_id: str | None
    title: str | None
    channel: str | None = Field(None, description="The video's channel, or its uploader.")
    upload_date: str | None = Field(None, description="The day the video was published, `YYYY-MM-DD`.",
                                    json_schema_extra={"format": "date"})
    language: str = Field(description=(
        "The language spoken: the one asked for, else detected; `\"\"` when none was asked for, no speech "
        "was heard and the model is multilingual."))
    task: Literal["transcribe", "translate"] = Field("transcribe", description=(
        "`translate`: the text is in English, whatever `language` was spoken."))
    duration: float = Field(description="Seconds: of the audio (Whisper), or from the video's metadata, else "
                                        "the end of the last caption (captions).")
    source: Literal["whisper", "captions"] = Field("whisper", description=(
        "`whisper`, or `captions`: the video's own manual captions."))
    caption_track: str | None = Field(None, description="With `captions`: the track used, e.g. `en-US`.")
    model: str | None = Field(description="The Whisper model; null for `captions`.")
    speech_detected: bool = Field(True, description=(
        "False when the voice-activity filter (`WHISPER_VAD_FILTER`) heard no speech at all: then `segments` is "
        "empty and `text` is `\"\"`, not words invented in silence."))
    speech_seconds: float | None = Field(None, description=(
        "Seconds of speech the voice-activity filter found; null when it did not run (`captions`, or "
        "`WHISPER_VAD_FILTER=false`)."))
    text: str
    segments: list[Segment]
    chapters: list[Chapter] = Field([], description="The video's chapters, if it has any, in order.")
    created_at: Timestamp


class BatchAccepted(Document):
    batch_id: str
    status: Literal["accepted"]
    queue: Literal["batch"]
    total: int
    job_ids: list[str]
    status_url: str
    message: str


class BatchVideo(JobStatus):
    index: int


class ExpiredVideo(Document):
    """A video of the batch whose job record has expired (``RESULT_TTL``)."""

    index: int
    job_id: str
    status: Literal["expired"]
    progress: Literal[100]


class BatchCounts(Document):
    pending: int
    processing: int
    completed: int
    failed: int
    cancelled: int
    expired: int


class BatchStatus(Document):
    batch_id: str
    status: Literal["pending", "processing", "completed", "cancelled"]
    progress: int = Field(ge=0, le=100)
    total: int
    counts: BatchCounts
    videos: list[BatchVideo | ExpiredVideo]
    webhook: WebhookDelivery | None = Field(None, description="With the batch's `callback_url`: its delivery.")


class BatchCancelled(Document):
    batch_id: str
    cancelled: int
    message: str


class Me(Document):
    id: str
    email: str
    tier: Tier
    role: Literal["user", "admin"]
    quota: QuotaDocument
    rate_limit_per_minute: int
    max_video_duration: int
    queue: QueueName


class AdminUser(Document):
    id: str
    email: str
    tier: Tier
    role: Literal["user", "admin"]
    quota_override: int | None = Field(description="Jobs per month instead of the tier's, if set.")
    created_at: Timestamp
    quota: QuotaDocument
    keys: int


class AdminUsers(Document):
    users: list[AdminUser]


class Health(Document):
    status: Literal["ok"]


class Ready(Document):
    status: Literal["ready"]
