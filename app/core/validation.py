"""Validation of request bodies: pydantic for shape, then ytcaption's own rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.core.errors import InvalidJSON, UnknownLanguage, UnknownModel, ValidationFailed
from app.core.languages import AUTO, WHISPER_LANGUAGES
from app.core.schemas import SubmitBody
from app.core.settings import Settings
from app.core.urls import VideoURL, parse_video_url

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class TranscriptionRequest:
    """A submit body that passed every rule, ready to enqueue."""

    video: VideoURL
    language: str | None  # None: detect
    model: str  # the public model name
    source: str = "whisper"  # whisper, captions or auto


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

    model = body.model if body.model is not None else settings.default_model_name
    if model not in settings.allowed_models:
        offered = ", ".join(sorted(settings.allowed_models))
        raise UnknownModel(f"Model {model!r} is not available here; choose one of: {offered}.")

    language = body.language.strip().lower()
    if language != AUTO and language not in WHISPER_LANGUAGES:
        raise UnknownLanguage(
            f"Language {body.language!r} is not one Whisper knows; use 'auto' or an ISO 639-1 code such as 'en'."
        )
    # Captions only never reach the model: its language does not limit theirs.
    if model.endswith(".en") and language not in (AUTO, "en") and body.source != "captions":
        raise UnknownLanguage(f"Model {model!r} only transcribes English; choose language 'en' or 'auto'.")
    return TranscriptionRequest(video=video, language=None if language == AUTO else language, model=model,
                                source=body.source)


def _describe(exc: PydanticValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg']}")
    return "; ".join(problems) + "."
