"""Validation of request bodies: pydantic for shape, then ytcaption's own rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.core.errors import CannotTranslate, InvalidJSON, UnknownLanguage, UnknownModel, ValidationFailed
from app.core.languages import AUTO, WHISPER_LANGUAGES
from app.core.options import EngineOptions
from app.core.schemas import EngineFields, SubmitBody, UploadForm
from app.core.settings import Settings
from app.core.urls import VideoURL, check_callback_url, parse_video_url

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Upload:
    """An audio file that came with the request."""

    filename: str
    data: bytes

    @cached_property
    def sha256(self) -> str:
        """The audio's SHA-256 (hex), computed once: the work key and the idempotency fingerprint both use it."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class TranscriptionRequest:
    """A submit body that passed every rule, ready to enqueue: a video's URL, or an uploaded file."""

    video: VideoURL | None
    language: str | None  # None: detect
    model: str  # the public model name
    source: str = "whisper"  # whisper, captions or auto
    upload: Upload | None = None
    options: EngineOptions = EngineOptions()
    cache: bool = True  # False: never answered from the result cache, never attached to work in flight
    callback_url: str | None = None  # where the job's end is announced (``app.core.webhooks``)

    @property
    def what(self) -> str:
        """What is transcribed, in a sentence: the URL, or the uploaded file's name."""
        return self.video.url if self.video is not None else f"the uploaded file {self.upload.filename!r}"


def parse_body(model: type[Model], payload: Any) -> Model:
    """A decoded JSON payload as ``model``, or ``ValidationFailed`` naming every problem."""
    if not isinstance(payload, dict):
        raise InvalidJSON()
    try:
        return model.model_validate(payload)
    except PydanticValidationError as exc:
        raise ValidationFailed(_describe(exc)) from None


def parse_submit(payload: Any, settings: Settings) -> TranscriptionRequest:
    """Validate a submit body; raise a ``BadRequest`` subclass naming the problem."""
    return check_submit(parse_body(SubmitBody, payload), settings)


def check_submit(body: SubmitBody, settings: Settings) -> TranscriptionRequest:
    """Apply ytcaption's rules (URL policy, model, language) to a well-formed body."""
    video = parse_video_url(body.youtube_url, settings.allowed_url_hosts)
    if body.task == "translate" and body.source != "whisper":
        raise ValidationFailed("task 'translate' needs source 'whisper': a video's captions are read as they are.")
    model = check_model(body.model, settings)
    # Captions only never reach the model: its language does not limit theirs.
    language = check_language(body.language, model if body.source != "captions" else None)
    return TranscriptionRequest(video=video, language=language, model=model, source=body.source,
                                options=check_options(body, model, settings), cache=body.cache,
                                callback_url=check_callback(body.callback_url, settings))


def parse_upload(form: dict[str, str], upload: Upload, settings: Settings) -> TranscriptionRequest:
    """Validate the fields that came with an uploaded file (``multipart/form-data``)."""
    fields = parse_body(UploadForm, form)
    model = check_model(fields.model, settings)
    return TranscriptionRequest(video=None, language=check_language(fields.language, model), model=model,
                                upload=upload, options=check_options(fields, model, settings), cache=fields.cache,
                                callback_url=check_callback(fields.callback_url, settings))


def check_callback(url: str | None, settings: Settings) -> str | None:
    """The ``callback_url`` asked for, if any, once it passed the callback policy (``WEBHOOK_ALLOWED_HOSTS``)."""
    if url is None:
        return None
    check_callback_url(url, settings.webhook_allowed_hosts)
    return url.strip()


def check_model(name: str | None, settings: Settings) -> str:
    """The public model name asked for (the default one if None), if this server offers it."""
    model = name if name is not None else settings.default_model_name
    if model not in settings.allowed_models:
        offered = ", ".join(sorted(settings.allowed_models))
        raise UnknownModel(f"Model {model!r} is not available here; choose one of: {offered}.")
    return model


def check_language(asked: str, model: str | None) -> str | None:
    """The language code asked for, None for ``auto``; ``model``: the model that will hear it, if any."""
    language = asked.strip().lower()
    if language != AUTO and language not in WHISPER_LANGUAGES:
        raise UnknownLanguage(
            f"Language {asked!r} is not one Whisper knows; use 'auto' or an ISO 639-1 code such as 'en'."
        )
    if model is not None and is_english_only(model) and language not in (AUTO, "en"):
        raise UnknownLanguage(f"Model {model!r} only transcribes English; choose language 'en' or 'auto'.")
    return None if language == AUTO else language


def is_english_only(model: str) -> bool:
    """Whether the public model ``model`` knows only English: Whisper's English-only models end in ``.en``."""
    return model.endswith(".en")


def check_options(fields: EngineFields, model: str, settings: Settings) -> EngineOptions:
    """The engine options asked for; translation only with a model that knows other languages than English."""
    if fields.task == "translate" and is_english_only(model):
        able = sorted(name for name in settings.allowed_models if not is_english_only(name))
        can = (f"choose one of: {', '.join(able)}" if able else
               "this server offers none (WHISPER_ALLOWED_MODELS has only English-only models)")
        raise CannotTranslate(f"Model {model!r} only knows English and cannot translate; to translate, "
                              f"{can}.")
    return EngineOptions(task=fields.task, prompt=fields.prompt or None, temperature=fields.temperature,
                         word_timestamps=fields.word_timestamps)


def _describe(exc: PydanticValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg']}")
    return "; ".join(problems) + "."
