"""Section 6: what each engine setting costs and buys, side by side (full mode only).

Each variant is ``FasterWhisperEngine`` with one setting changed from the defaults, in this
process, its model loaded before timing. Every variant transcribes the long clip (dense speech)
and the sparse clip (mostly silence) in turn, run after run, so that the machine's load changes
(it is shared) fall on all variants alike; each figure is the median of the runs, with the load
average noted. RTF = seconds to transcribe (decoding the file included) ÷ seconds of audio; CPU s
per audio s = the process's CPU time (all its threads) ÷ seconds of audio, which other work on the
machine changes far less than RTF; WER against the text the fixtures were spoken from.

The default decoding is faster-whisper's ``BatchedInferencePipeline`` as ``workers.decoding`` drives
it (``WHISPER_BATCH_SIZE``); one more variant runs the pipeline as it comes, on the default engine's
loaded model with the same beam, language and temperature: its own voice activity detection, no
word times (so a segment per 30-second window), what the engine's way is measured against.

Last, throughput on the long clip, audio seconds transcribed per second: two processes transcribing
at once (two workers) with one thread each (auto now, on 2 cores) or two each (auto before: every
core to every worker), against one process of two threads transcribing twice as often.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import statistics
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.core.settings import Settings
from bench.engine import SAMPLE_RATE, SPEECH, Clip
from bench.harness import FIXTURES, BenchError
from bench.report import Figure, Report

SECTION = "6 engine settings"


@dataclass(frozen=True)
class Variant:
    label: str
    #: Settings changed from the defaults.
    overrides: dict[str, str] = field(default_factory=dict)
    #: Above 0: faster-whisper's BatchedInferencePipeline with this batch size, on the default engine's model.
    batch_size: int = 0


VARIANTS = (
    Variant("defaults: int8, beam 5, batches of 8, threads auto (one worker: every core)"),
    Variant("WHISPER_BATCH_SIZE=0 (window after window)", {"WHISPER_BATCH_SIZE": "0"}),
    Variant("WHISPER_BATCH_SIZE=4", {"WHISPER_BATCH_SIZE": "4"}),
    Variant("WHISPER_BATCH_SIZE=16", {"WHISPER_BATCH_SIZE": "16"}),
    Variant("WHISPER_CPU_THREADS=1", {"WHISPER_CPU_THREADS": "1"}),
    Variant("WHISPER_CPU_THREADS=1, WHISPER_BATCH_SIZE=0", {"WHISPER_CPU_THREADS": "1", "WHISPER_BATCH_SIZE": "0"}),
    Variant("WHISPER_BEAM_SIZE=1 (greedy)", {"WHISPER_BEAM_SIZE": "1"}),
    Variant("WHISPER_BEAM_SIZE=2", {"WHISPER_BEAM_SIZE": "2"}),
    Variant("WHISPER_COMPUTE_TYPE=int8_float32", {"WHISPER_COMPUTE_TYPE": "int8_float32"}),
    Variant("WHISPER_COMPUTE_TYPE=float32", {"WHISPER_COMPUTE_TYPE": "float32"}),
    Variant("WHISPER_VAD_FILTER=false (window after window: batches need VAD)", {"WHISPER_VAD_FILTER": "false"}),
    Variant("faster-whisper's BatchedInferencePipeline as it comes (its VAD, no word times), batch 8", batch_size=8),
)


def reference_text(clip_seconds: float) -> str:
    """What the long clip says: the fixtures' texts in the order ``bench.engine.make_long_clip`` plays them."""
    from faster_whisper.audio import decode_audio

    from tests.helpers import FIXTURE_TEXT

    lengths = {name: len(decode_audio(str(FIXTURES / name), sampling_rate=SAMPLE_RATE)) / SAMPLE_RATE + 0.5
               for name in SPEECH}
    words, elapsed, index = [], 0.0, 0
    while elapsed + lengths[SPEECH[index % len(SPEECH)]] <= clip_seconds:  # only pieces heard to the end
        name = SPEECH[index % len(SPEECH)]
        words.append(FIXTURE_TEXT[name])
        elapsed += lengths[name]
        index += 1
    return " ".join(words)


def make_sparse_clip(directory: Path, speech_seconds_apart: int = 20) -> Clip:
    """The lecture twice with ``speech_seconds_apart`` s of silence before, between and after."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    lecture = decode_audio(str(FIXTURES / "lecture.webm"), sampling_rate=SAMPLE_RATE)
    silence = np.zeros(SAMPLE_RATE * speech_seconds_apart, dtype=np.float32)
    audio = np.concatenate([silence, lecture, silence, lecture, silence])
    path = directory / "sparse.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return Clip(path.name, path)


#: A transcription: the audio file's path in, ``(text, audio seconds)`` out.
Transcribe = Callable[[str], tuple[str, float]]


def run(report: Report, long_clip: Clip, sparse_clip: Clip, runs: int) -> None:
    from tests.helpers import FIXTURE_TEXT, word_error_rate

    transcribers = {variant.label: _transcriber(variant) for variant in VARIANTS}
    clips = (long_clip, sparse_clip)
    seconds = {(label, clip.name): [] for label in transcribers for clip in clips}
    cpu = {label: [] for label in transcribers}
    texts, durations, loads = {}, {}, []
    for _ in range(runs):
        for clip in clips:
            for label, transcribe in transcribers.items():
                loads.append(os.getloadavg()[0])
                started, cpu_started = time.perf_counter(), time.process_time()
                texts[label, clip.name], durations[clip.name] = transcribe(str(clip.path))
                seconds[label, clip.name].append(time.perf_counter() - started)
                if clip is long_clip:
                    cpu[label].append((time.process_time() - cpu_started) / durations[clip.name])
    references = {long_clip.name: reference_text(durations[long_clip.name]),
                  sparse_clip.name: " ".join([FIXTURE_TEXT["lecture.webm"]] * 2)}
    for label in transcribers:
        for clip in clips:
            name = f"{clip.name} (2×24 s speech in {durations[clip.name]:.0f} s)" if clip is sparse_clip else clip.name
            report.add(Figure(SECTION, f"{label}: RTF on {name}",
                              [s / durations[clip.name] for s in seconds[label, clip.name]], unit="×", digits=3))
            report.add(Figure(SECTION, f"{label}: WER on {clip.name}",
                              [word_error_rate(references[clip.name], texts[label, clip.name])], digits=3))
        report.add(Figure(SECTION, f"{label}: CPU s per audio s on {long_clip.name}", cpu[label], digits=3))
    del transcribers
    gc.collect()
    for label, (throughput, cpu_cost) in _throughputs(long_clip, runs).items():
        report.add(Figure(SECTION, f"{label}: audio s transcribed per s, {long_clip.name}", throughput, digits=1))
        report.add(Figure(SECTION, f"{label}: CPU s per audio s, {long_clip.name}", cpu_cost, digits=3))
    report.note(SECTION, "each variant changes one setting from the defaults; variants take turns, run after run; "
                         f"load average (1 min) during the runs {min(loads):.1f}–{max(loads):.1f}, median "
                         f"{statistics.median(loads):.1f} on {os.cpu_count()} cores; WER is word error rate against "
                         "the text the espeak-ng fixtures were made from (lower is better)")


def _transcriber(variant: Variant) -> Transcribe:
    """Load ``variant``'s engine (or pipeline) and warm it up; return what transcribes a file with it."""
    from workers.engines import FasterWhisperEngine

    settings = Settings.load(variant.overrides)
    engine, model = FasterWhisperEngine(settings), settings.default_model_name
    loaded, _ = engine.load(model)

    def transcribe(path: str) -> tuple[str, float]:
        transcript = engine.transcribe(path, language="en", model=model)
        return transcript.text, transcript.duration

    if variant.batch_size:
        transcribe = _batched(loaded, settings, variant.batch_size)
    transcribe(str(FIXTURES / "lecture.webm"))  # warm-up
    return transcribe


def _batched(model, settings: Settings, batch_size: int) -> Transcribe:
    """faster-whisper's BatchedInferencePipeline on ``model``: the decoding options the engine uses by
    default (beam, temperature 0, no previous-text prompt), its own VAD chunks."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.audio import decode_audio

    pipeline = BatchedInferencePipeline(model)

    def transcribe(path: str) -> tuple[str, float]:
        audio = decode_audio(path, sampling_rate=SAMPLE_RATE)
        segments, _ = pipeline.transcribe(audio, language="en", beam_size=settings.whisper_beam_size,
                                          batch_size=batch_size, temperature=0.0, condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments), len(audio) / SAMPLE_RATE

    return transcribe


def _throughputs(clip: Clip, runs: int) -> dict[str, list[float]]:
    """Audio seconds per second, and CPU seconds per audio second, of two workers (processes)
    transcribing at once with 1 thread each, or 2 each (what auto gave every worker before), and of
    one worker with 2 threads transcribing twice as often."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CTranslate2's threads do not survive fork
    layouts = {label: (processes, threads, times) for label, processes, threads, times in (
        ("2 workers × 1 thread (auto now)", 2, 1, 1),
        ("2 workers × 2 threads (auto before: every core each)", 2, 2, 1),
        ("1 worker × 2 threads", 1, 2, 2))}
    results: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in layouts}
    for _ in range(runs):
        for label, (processes, threads, times) in layouts.items():
            barrier, spans = context.Barrier(processes), context.Queue()
            children = [context.Process(target=_transcribe_after, args=(str(clip.path), threads, times, barrier, spans))
                        for _ in range(processes)]
            for child in children:
                child.start()
            ended = [_result(spans, children) for _ in children]
            for child in children:
                child.join()
            audio = sum(duration * times for _, _, duration, _ in ended)
            results[label][0].append(audio / (max(end for _, end, _, _ in ended) - min(start for start, *_ in ended)))
            results[label][1].append(sum(cpu for *_, cpu in ended) / audio)
    return results


def _result(spans, children: list) -> tuple[float, float, float, float]:
    """The next child's result; ``BenchError`` if a child died instead of giving one."""
    while True:
        try:
            return spans.get(timeout=1)
        except queue.Empty:
            if dead := [child for child in children if child.exitcode not in (None, 0)]:
                raise BenchError(f"a transcribing process exited with code {dead[0].exitcode}") from None


def _transcribe_after(path: str, threads: int, times: int, barrier, spans) -> None:
    """In a child process: load the engine with ``threads`` threads, wait for the others, transcribe
    ``path`` ``times`` times; put ``(start, end, audio seconds, CPU seconds)`` on ``spans`` (start and
    end on the monotonic clock, which every process shares)."""
    from workers.engines import FasterWhisperEngine

    settings = Settings.load({"WHISPER_CPU_THREADS": str(threads)})
    engine, model = FasterWhisperEngine(settings), settings.default_model_name
    engine.load(model)
    engine.transcribe(str(FIXTURES / "lecture.webm"), language="en", model=model)  # warm-up
    barrier.wait()
    started, cpu_started = time.monotonic(), time.process_time()
    for _ in range(times):
        duration = engine.transcribe(path, language="en", model=model).duration
    spans.put((started, time.monotonic(), duration, time.process_time() - cpu_started))
