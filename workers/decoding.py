"""How the faster-whisper engine decodes a recording: the same audio gives the same words, silence none.

Whisper left to its defaults failed in three ways here (tiny.en, espeak-ng speech): an empty
transcript for a clip that another run transcribed fine, a 30-second window missing from the
middle of a transcript, and "You" every 30 seconds through ten minutes of silence. So:

1. **Voice activity first** (``WHISPER_VAD_FILTER``, on by default): Silero VAD, which
   faster-whisper ships in its wheel, finds the speech; only the speech is decoded, joined into
   one stream as faster-whisper's own ``vad_filter`` does, and the times are mapped back. Audio
   with no speech is not decoded at all: an empty transcript, ``speech_seconds`` 0.
2. **Batched, deterministic decoding** (``WHISPER_BATCH_SIZE``, 8 by default): the speech is
   gathered into windows of up to 30 s (``windows``), which faster-whisper's
   ``BatchedInferencePipeline`` decodes several at a time, each on its own, at temperature 0
   only; each window's words, timed after decoding, are cut into sentences (``sentences``).
   Measured on 2 cores, twice as fast as window after window, with as many errors on short clips,
   fewer on a 10-minute reading and more on the noisiest speech (docs/performance.md). With
   ``WHISPER_BATCH_SIZE=0`` the speech is decoded window after window, each with the previous
   window's text as its prompt (``WHISPER_CONDITION_ON_PREVIOUS_TEXT``); Whisper's fallback to
   higher temperatures, which samples at random, stays off unless ``WHISPER_TEMPERATURE_FALLBACK``
   brings it back.
3. **No speech left without words**: decoded window after window, Whisper drops a window it
   judges silent (no-speech probability above 0.6 with a low log-probability): where VAD heard at
   least ``MIN_GAP`` seconds of speech that no segment covers, that stretch is decoded again on
   its own, with that check off. Batched, a window of ``MIN_GAP`` seconds or more that came back
   without a word is decoded again the same way. Their segments take their place in time order.

A long recording that several workers transcribe together (``workers.pieces``) is cut in the
pauses between sentences that ``pauses`` finds, so that no word is cut in two (``plan_pieces``).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.core.options import EngineOptions
from app.core.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Seconds of audio Whisper decodes at once.
WINDOW = 30.0
#: Batched decoding's segments: a pause between two words (s) that starts a new one, and their longest.
SENTENCE_PAUSE = 1.0
LONGEST_SEGMENT = 15.0
#: Seconds of speech (by VAD) under no segment that are decoded again.
MIN_GAP = 3.0
#: Seconds of audio taken on each side of such a stretch when it is decoded again.
GAP_CONTEXT = 0.3
#: The shortest silence (ms) that may separate two pieces of a recording: a pause between words
#: is shorter, one between sentences longer.
PAUSE_MS = 300



@dataclass(frozen=True)
class Word:
    """A word and its time (seconds), as Whisper aligned it, with the probability it gave it."""

    start: float
    end: float
    word: str
    probability: float


class RawSegment(NamedTuple):
    """A segment as decoded: its words (when asked for), and how sure Whisper was of the window it is in."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


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


def vad_options(settings: Settings, max_seconds: float = float("inf")) -> Any:
    from faster_whisper.vad import VadOptions

    return VadOptions(threshold=settings.whisper_vad_threshold,
                      min_speech_duration_ms=settings.whisper_vad_min_speech_ms,
                      min_silence_duration_ms=settings.whisper_vad_min_silence_ms,
                      speech_pad_ms=settings.whisper_vad_speech_pad_ms, max_speech_duration_s=max_seconds)


def speech_chunks(audio: Any, settings: Settings, max_seconds: float = float("inf")) -> list[dict[str, int]]:
    """Silero VAD's speech chunks of 16 kHz ``audio``: ``{"start", "end"}`` in samples, each at most
    ``max_seconds`` long (Silero splits a longer stretch at its last short pause before that)."""
    from faster_whisper.vad import get_speech_timestamps

    return get_speech_timestamps(audio, vad_options(settings, max_seconds), sampling_rate=SAMPLE_RATE)


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


def decoding_options(settings: Settings, asked: EngineOptions = EngineOptions()) -> dict[str, Any]:
    """What ``WhisperModel.transcribe`` is given besides the audio and the language: the server's settings,
    and what the request asked for (``asked``: task, prompt, temperature, word timestamps)."""
    fallback = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if settings.whisper_temperature_fallback else 0.0
    return {
        "task": asked.task,
        "initial_prompt": asked.prompt,
        "word_timestamps": asked.word_timestamps,
        "beam_size": settings.whisper_beam_size,
        "temperature": fallback if asked.temperature is None else asked.temperature,
        "condition_on_previous_text": settings.whisper_condition_on_previous_text,
        "vad_filter": False,  # done here, once (see the module's docstring)
    }


def decode(model: Any, audio: Any, *, language: str | None, settings: Settings,
           on_progress: Callable[[float], None], asked: EngineOptions = EngineOptions()) -> Decoded:
    """Transcribe 16 kHz mono float32 ``audio`` with the faster-whisper ``model``, as ``asked``."""
    duration = len(audio) / SAMPLE_RATE
    options = decoding_options(settings, asked)
    if not settings.whisper_vad_filter:
        segments, info = model.transcribe(audio, language=language, **options)
        return Decoded(info.language, list(_reporting(_raw(segments), duration, on_progress)), None)

    from faster_whisper.transcribe import restore_speech_timestamps
    from faster_whisper.vad import collect_chunks

    batched = settings.whisper_batch_size > 0
    chunks = speech_chunks(audio, settings, max_seconds=WINDOW if batched else float("inf"))
    spans = [Span(chunk["start"] / SAMPLE_RATE, chunk["end"] / SAMPLE_RATE) for chunk in chunks]
    speech_seconds = round(sum(span.seconds for span in spans), 3)
    if not chunks:
        return Decoded(_language_without_speech(model, language), [], 0.0)
    if batched:
        detected, found, gaps = _decode_batched(model, audio, spans, language=language, settings=settings,
                                                on_progress=on_progress, options=options)
    else:
        pieces, _ = collect_chunks(audio, chunks, sampling_rate=SAMPLE_RATE)
        segments, info = model.transcribe(pieces[0], language=language, **options)
        restored = _raw(restore_speech_timestamps(segments, chunks, SAMPLE_RATE))
        found = [_within_speech(segment, spans) for segment in _reporting(restored, duration, on_progress)]
        detected, gaps = info.language, uncovered(spans, found, MIN_GAP)
    for gap in gaps:
        found += _decode_again(model, audio, gap, detected, options)
    if gaps:
        log.info("decoded %d stretch(es) of speech again that the first pass left without words (%.1f s)",
                 len(gaps), sum(gap.seconds for gap in gaps))
    found.sort(key=lambda segment: (segment[0], segment[1]))
    return Decoded(detected, found, speech_seconds, redecoded=len(gaps))


def windows(spans: list[Span], seconds: float = WINDOW) -> list[Span]:
    """The stretches of speech ``spans`` (none longer than ``seconds``) gathered in order into windows
    of at most ``seconds``: what batched decoding decodes, one window per item of a batch."""
    gathered: list[Span] = []
    for span in spans:
        if gathered and span.end - gathered[-1].start <= seconds:
            gathered[-1] = Span(gathered[-1].start, span.end)
        else:
            gathered.append(span)
    return gathered


def _decode_batched(model: Any, audio: Any, spans: list[Span], *, language: str | None, settings: Settings,
                    on_progress: Callable[[float], None], options: dict[str, Any]
                    ) -> tuple[str, list[RawSegment], list[Span]]:
    """faster-whisper's ``BatchedInferencePipeline`` on the windows of speech (``windows``), each
    decoded on its own, ``WHISPER_BATCH_SIZE`` at a time, at one temperature (0 unless the request
    asked for another): the language, the segments, and the windows of ``MIN_GAP`` s or more that
    came back without a word. The request's prompt is every window's.

    It decodes without timestamp tokens: asked for them, it lost words here (WER 0.19-0.22 against
    0.12 on the bench's 150 s clip). A window is then one segment of up to 30 s, which its words'
    times (``word_timestamps``, aligned after decoding) cut into sentences (``sentences``).
    """
    from faster_whisper import BatchedInferencePipeline

    gathered = windows(spans)
    starts = [window.start for window in gathered]
    duration = len(audio) / SAMPLE_RATE
    temperature = options["temperature"] if isinstance(options["temperature"], float) else 0.0
    segments, info = BatchedInferencePipeline(model).transcribe(
        audio, language=language, task=options["task"], initial_prompt=options["initial_prompt"],
        beam_size=settings.whisper_beam_size, temperature=temperature,
        batch_size=settings.whisper_batch_size, clip_timestamps=[{"start": w.start, "end": w.end} for w in gathered],
        vad_filter=False, without_timestamps=True, word_timestamps=True)
    found, heard = [], set()
    for segment in segments:  # one per window, in order
        on_progress(min(1.0, segment.end / duration))
        words = [word for word in segment.words or [] if word.word.strip()]
        if words:
            heard.add(max(0, bisect.bisect_right(starts, segment.start + 0.01) - 1))
            found += [_within_speech(sentence._replace(avg_logprob=segment.avg_logprob,
                                                       no_speech_prob=segment.no_speech_prob), spans)
                      for sentence in sentences(words)]
    missing = [window for index, window in enumerate(gathered) if index not in heard and window.seconds >= MIN_GAP]
    return info.language, found, missing


def sentences(words: Iterable[Any], pause: float = SENTENCE_PAUSE, longest: float = LONGEST_SEGMENT
              ) -> Iterator[RawSegment]:
    """Words (``start``, ``end``, ``word``, as faster-whisper gives them) cut into segments: after a word
    that ends a sentence, before a word that follows a pause of ``pause`` s or more, and before a word
    that would make the segment longer than ``longest`` s."""
    group: list[Any] = []
    for word in words:
        if group and (word.start - group[-1].end >= pause or word.end - group[0].start > longest):
            yield _segment(group)
            group = []
        group.append(word)
        if word.word.strip().endswith((".", "?", "!")):
            yield _segment(group)
            group = []
    if group:
        yield _segment(group)


def _segment(words: list[Any]) -> RawSegment:
    return RawSegment(words[0].start, words[-1].end, "".join(word.word for word in words), _words(words))


def _words(words: Iterable[Any] | None) -> tuple[Word, ...]:
    """faster-whisper's words as ``Word``s (empty without word timestamps)."""
    return tuple(Word(word.start, word.end, word.word, word.probability) for word in words or ())


def uncovered(spans: Iterable[Span], segments: Iterable[RawSegment], min_gap: float) -> list[Span]:
    """The parts of the speech ``spans`` that no segment overlaps, ``min_gap`` seconds or longer."""
    ordered = sorted((segment[0], segment[1]) for segment in segments)
    gaps = []
    for span in spans:
        cursor = span.start
        for start, end in ordered:
            if end <= cursor or start >= span.end:
                continue
            if start - cursor >= min_gap:
                gaps.append(Span(cursor, start))
            cursor = max(cursor, end)
        if span.end - cursor >= min_gap:
            gaps.append(Span(cursor, span.end))
    return gaps


def _within_speech(segment: RawSegment, spans: list[Span]) -> RawSegment:
    """``segment`` ending no later than the stretch of speech it starts in: Whisper may time a
    window's last segment past the end of its audio, which, mapped back, lands in the silence after."""
    index = max(0, bisect.bisect_right([span.start for span in spans], segment.start) - 1)
    return segment._replace(end=max(segment.start, min(segment.end, spans[index].end)))


def _decode_again(model: Any, audio: Any, gap: Span, language: str, options: dict[str, Any]) -> list[RawSegment]:
    """Decode ``gap`` alone with the no-speech check off; keep the segments centred inside it."""
    start = max(0.0, gap.start - GAP_CONTEXT)
    piece = audio[int(start * SAMPLE_RATE):int((gap.end + GAP_CONTEXT) * SAMPLE_RATE)]
    # Word timestamps always, as batched decoding has them: ``Transcript`` keeps them only when asked for.
    segments, _ = model.transcribe(piece, language=language, **{**options, "word_timestamps": True},
                                   no_speech_threshold=None)
    kept = []
    for segment in _raw(segments):
        middle = start + (segment.start + segment.end) / 2
        if gap.start <= middle <= gap.end and segment.text.strip():
            kept.append(_shifted(segment, start)._replace(end=min(start + segment.end, gap.end + GAP_CONTEXT)))
    return kept


def _shifted(segment: RawSegment, offset: float) -> RawSegment:
    """``segment`` and its words ``offset`` seconds later."""
    words = tuple(Word(word.start + offset, word.end + offset, word.word, word.probability) for word in segment.words)
    return segment._replace(start=segment.start + offset, end=segment.end + offset, words=words)


def _reporting(segments: Iterable[RawSegment], duration: float,
               on_progress: Callable[[float], None]) -> Iterable[RawSegment]:
    """Each segment, reporting the fraction of the audio decoded so far."""
    for segment in segments:
        on_progress(min(1.0, segment.end / duration))
        yield segment


def _raw(segments: Iterable[Any]) -> Iterator[RawSegment]:
    """faster-whisper's segments as ``RawSegment``s."""
    return (RawSegment(segment.start, segment.end, segment.text, _words(segment.words), segment.avg_logprob,
                       segment.no_speech_prob) for segment in segments)


def _language_without_speech(model: Any, language: str | None) -> str:
    """The language of a transcript with no speech: the one asked for, an English-only model's, else ''."""
    if language:
        return language
    return "" if model.model.is_multilingual else "en"
