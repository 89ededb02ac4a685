"""How the faster-whisper engine decodes a recording: the same audio gives the same words, silence none.

Whisper left to its defaults failed in three ways here (tiny.en, espeak-ng speech): an empty
transcript for a clip that another run transcribed fine, a 30-second window missing from the
middle of a transcript, and "You" every 30 seconds through ten minutes of silence. So:

1. **Voice activity first** (``WHISPER_VAD_FILTER``, on by default): Silero VAD, which
   faster-whisper ships in its wheel, finds the speech; only the speech is decoded, joined into
   one stream as faster-whisper's own ``vad_filter`` does, and the times are mapped back. Audio
   with no speech is not decoded at all: an empty transcript, ``speech_seconds`` 0.
2. **Deterministic decoding**: temperature 0 only. Whisper's fallback to higher temperatures
   samples at random, so the same clip could come out differently (or empty) from run to run
   (``WHISPER_TEMPERATURE_FALLBACK`` brings it back). Each window keeps the previous window's
   text as its prompt (``WHISPER_CONDITION_ON_PREVIOUS_TEXT``): measured, it makes fewer errors
   on long speech, and what made it harmful, the dots or "You" written for silence becoming the
   prompt of the speech after it, is gone with the silence itself.
3. **No speech left without words**: Whisper drops a window it judges silent (no-speech
   probability above 0.6 with a low log-probability). Where VAD heard at least ``MIN_GAP``
   seconds of speech that no segment covers, that stretch is decoded again on its own, with that
   check off, and its segments take their place in time order.

A long recording that several workers transcribe together (``workers.pieces``) is cut in the
pauses between sentences that ``pauses`` finds, so that no word is cut in two (``plan_pieces``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.core.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Seconds of speech (by VAD) under no segment that are decoded again.
MIN_GAP = 3.0
#: Seconds of audio taken on each side of such a stretch when it is decoded again.
GAP_CONTEXT = 0.3
#: The shortest silence (ms) that may separate two pieces of a recording: a pause between words
#: is shorter, one between sentences longer.
PAUSE_MS = 300

RawSegment = tuple[float, float, str]


@dataclass(frozen=True)
class Span:
    """Seconds from the start of the audio."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Piece:
    """A piece of a long recording: seconds from the recording's start, and its audio file."""

    index: int
    start: float
    end: float
    path: str


@dataclass
class Decoded:
    language: str
    segments: list[RawSegment]
    #: Seconds of speech VAD found; None when VAD is off.
    speech_seconds: float | None
    #: Stretches of speech decoded again because the first pass left them without words.
    redecoded: int = 0


def vad_options(settings: Settings) -> Any:
    from faster_whisper.vad import VadOptions

    return VadOptions(threshold=settings.whisper_vad_threshold,
                      min_speech_duration_ms=settings.whisper_vad_min_speech_ms,
                      min_silence_duration_ms=settings.whisper_vad_min_silence_ms,
                      speech_pad_ms=settings.whisper_vad_speech_pad_ms)


def speech_chunks(audio: Any, settings: Settings) -> list[dict[str, int]]:
    """Silero VAD's speech chunks of 16 kHz ``audio``: ``{"start", "end"}`` in samples."""
    from faster_whisper.vad import get_speech_timestamps

    return get_speech_timestamps(audio, vad_options(settings), sampling_rate=SAMPLE_RATE)


def speech_spans(audio: Any, settings: Settings) -> list[Span]:
    return [Span(chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE) for chunk in speech_chunks(audio, settings)]


def pauses(audio: Any, settings: Settings) -> list[Span]:
    """The silences of at least ``PAUSE_MS`` between stretches of speech, by Silero VAD."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=settings.whisper_vad_threshold, min_silence_duration_ms=PAUSE_MS,
                         speech_pad_ms=0)
    chunks = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    edges = [0, *(edge for chunk in chunks for edge in (chunk["start"], chunk["end"])), len(audio)]
    return [Span(start / SAMPLE_RATE, end / SAMPLE_RATE)
            for start, end in zip(edges[::2], edges[1::2]) if end > start]


def plan_pieces(silences: list[Span], duration: float, target: float) -> list[Span]:
    """Spans of about ``target`` seconds covering ``[0, duration]``, each cut in the middle of a silence.

    A cut goes in the silence nearest to where it is due among those of 0.5 s or more within
    half a piece of it (else in the longest one there; else, with no silence at all, where it is
    due). The last piece is never shorter than half a piece.
    """
    cuts = [0.0]
    while duration - cuts[-1] > 1.5 * target:
        due = cuts[-1] + target
        near = [span for span in silences if abs((span.start + span.end) / 2 - due) <= target / 2]
        long_enough = [span for span in near if span.seconds >= 0.5] or sorted(near, key=lambda s: -s.seconds)[:1]
        if long_enough:
            best = min(long_enough, key=lambda span: abs((span.start + span.end) / 2 - due))
            cuts.append((best.start + best.end) / 2)
        else:
            cuts.append(due)
    return [Span(start, end) for start, end in zip(cuts, [*cuts[1:], duration])]


def decoding_options(settings: Settings) -> dict[str, Any]:
    """What ``WhisperModel.transcribe`` is given besides the audio and the language."""
    return {
        "beam_size": settings.whisper_beam_size,
        "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if settings.whisper_temperature_fallback else 0.0,
        "condition_on_previous_text": settings.whisper_condition_on_previous_text,
        "vad_filter": False,  # done here, once (see the module's docstring)
    }


def decode(model: Any, audio: Any, *, language: str | None, settings: Settings,
           on_progress: Callable[[float], None]) -> Decoded:
    """Transcribe 16 kHz mono float32 ``audio`` with the faster-whisper ``model``."""
    duration = len(audio) / SAMPLE_RATE
    options = decoding_options(settings)
    if not settings.whisper_vad_filter:
        segments, info = model.transcribe(audio, language=language, **options)
        return Decoded(info.language, list(_reporting(segments, duration, on_progress)), None)

    from faster_whisper.transcribe import restore_speech_timestamps
    from faster_whisper.vad import collect_chunks

    chunks = speech_chunks(audio, settings)
    spans = [Span(chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE) for chunk in chunks]
    speech_seconds = round(sum(span.seconds for span in spans), 3)
    if not chunks:
        return Decoded(_language_without_speech(model, language), [], 0.0)
    pieces, _ = collect_chunks(audio, chunks, sampling_rate=SAMPLE_RATE)
    segments, info = model.transcribe(pieces[0], language=language, **options)
    found = list(_reporting(restore_speech_timestamps(segments, chunks, SAMPLE_RATE), duration, on_progress))

    gaps = uncovered(spans, found, MIN_GAP)
    for gap in gaps:
        found += _decode_again(model, audio, gap, info.language, options)
    if gaps:
        log.info("decoded %d stretch(es) of speech again that the first pass left without words (%.1f s)",
                 len(gaps), sum(gap.seconds for gap in gaps))
    found.sort(key=lambda segment: (segment[0], segment[1]))
    return Decoded(info.language, found, speech_seconds, redecoded=len(gaps))


def uncovered(spans: Iterable[Span], segments: Iterable[RawSegment], min_gap: float) -> list[Span]:
    """The parts of the speech ``spans`` that no segment overlaps, ``min_gap`` seconds or longer."""
    ordered = sorted(segments)
    gaps = []
    for span in spans:
        cursor = span.start
        for start, end, _ in ordered:
            if end <= cursor or start >= span.end:
                continue
            if start - cursor >= min_gap:
                gaps.append(Span(cursor, start))
            cursor = max(cursor, end)
        if span.end - cursor >= min_gap:
            gaps.append(Span(cursor, span.end))
    return gaps


def _decode_again(model: Any, audio: Any, gap: Span, language: str, options: dict[str, Any]) -> list[RawSegment]:
    """Decode ``gap`` alone with the no-speech check off; keep the segments centred inside it."""
    start = max(0.0, gap.start - GAP_CONTEXT)
    piece = audio[int(start * SAMPLE_RATE):int((gap.end + GAP_CONTEXT) * SAMPLE_RATE)]
    segments, _ = model.transcribe(piece, language=language, **options, no_speech_threshold=None)
    kept = []
    for segment in segments:
        middle = start + (segment.start + segment.end) / 2
        if gap.start <= middle <= gap.end and segment.text.strip():
            kept.append((start + segment.start, min(start + segment.end, gap.end + GAP_CONTEXT), segment.text))
    return kept


def _reporting(segments: Iterable[Any], duration: float,
               on_progress: Callable[[float], None]) -> Iterable[RawSegment]:
    """Each segment as ``(start, end, text)``, reporting the fraction of the audio decoded so far."""
    for segment in segments:
        on_progress(min(1.0, segment.end / duration))
        yield segment.start, segment.end, segment.text


def _language_without_speech(model: Any, language: str | None) -> str:
    """The language of a transcript with no speech: the one asked for, an English-only model's, else ''."""
    if language:
        return language
    return "" if model.model.is_multilingual else "en"
