"""What a request may ask of the engine besides the model and the language.

Plain data, so that the API validates it without the ML stack and a job carries it as JSON
(``as_job``); ``workers.decoding`` turns it into Whisper's arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class EngineOptions:
    #: ``translate``: the speech, in whatever language, written in English (multilingual models only).
    task: Task = "transcribe"
    #: Text that comes before the audio, as Whisper sees it: names, spelling and style to follow.
    prompt: str | None = None
    #: Sampling temperature of every window (0 to 1); None: the server's (0, or its fallback).
    temperature: float | None = None
    #: Keep each word's start and end in the transcript.
    word_timestamps: bool = False

    def as_job(self) -> dict[str, Any]:
        """The options that differ from the defaults, for a job's arguments (empty for most jobs)."""
        default = EngineOptions()
        return {name: value for name, value in asdict(self).items() if value != getattr(default, name)}

    @classmethod
    def from_job(cls, options: dict[str, Any] | None) -> EngineOptions:
        return cls(**(options or {}))
