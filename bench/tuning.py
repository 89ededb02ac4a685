"""Section 6: what each engine setting costs and buys (full mode only).

Each variant is ``FasterWhisperEngine`` with one setting changed from the defaults, timed on the
long clip (speed) and scored on it (word error rate against the text the fixtures were made
from). ``WHISPER_VAD_FILTER`` is timed on a clip that is mostly silence, where it matters.
"""

from __future__ import annotations

import gc
import time
import wave
from pathlib import Path

from app.core.settings import Settings
from bench.engine import SAMPLE_RATE, SPEECH, Clip
from bench.harness import FIXTURES
from bench.report import Figure, Report

SECTION = "6 engine settings"

#: (label, settings changed from the defaults).
VARIANTS = (
    ("defaults: int8, beam 5, threads auto", {}),
    ("WHISPER_BEAM_SIZE=1 (greedy)", {"WHISPER_BEAM_SIZE": "1"}),
    ("WHISPER_COMPUTE_TYPE=float32", {"WHISPER_COMPUTE_TYPE": "float32"}),
    ("WHISPER_CPU_THREADS=1", {"WHISPER_CPU_THREADS": "1"}),
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


def run(report: Report, long_clip: Clip, sparse_clip: Clip, runs: int) -> None:
    from tests.helpers import FIXTURE_TEXT, word_error_rate

    reference = None
    for label, overrides in VARIANTS:
        seconds, text, duration = _time(Settings.load(overrides), long_clip, runs)
        reference = reference or reference_text(duration)
        report.add(Figure(SECTION, f"{label}: RTF on {long_clip.name}", [s / duration for s in seconds],
                          unit="×", digits=3))
        report.add(Figure(SECTION, f"{label}: WER on {long_clip.name}", [word_error_rate(reference, text)],
                          digits=3))
    lecture_twice = " ".join([FIXTURE_TEXT["lecture.webm"]] * 2)
    for label, overrides in (("WHISPER_VAD_FILTER=false", {}), ("WHISPER_VAD_FILTER=true", {"WHISPER_VAD_FILTER": "true"})):
        seconds, text, duration = _time(Settings.load(overrides), sparse_clip, runs)
        report.add(Figure(SECTION, f"{label}: RTF on {sparse_clip.name} (2×24 s speech in {duration:.0f} s)",
                          [s / duration for s in seconds], unit="×", digits=3))
        report.add(Figure(SECTION, f"{label}: WER on {sparse_clip.name}",
                          [word_error_rate(lecture_twice, text)], digits=3))
    report.note(SECTION, "each variant changes one setting from the defaults; WER is word error rate against "
                         "the text the espeak-ng fixtures were made from (lower is better)")


def _time(settings: Settings, clip: Clip, runs: int) -> tuple[list[float], str, float]:
    """Seconds per run (model loaded and warmed up first), the last transcript's text, the audio's duration."""
    from workers.engines import FasterWhisperEngine

    engine = FasterWhisperEngine(settings)
    model = settings.default_model_name
    engine.load(model)
    engine.transcribe(str(FIXTURES / "fox.m4a"), language=None, model=model)  # warm-up
    seconds, text, duration = [], "", 0.0
    for _ in range(runs):
        started = time.perf_counter()
        transcript = engine.transcribe(str(clip.path), language="en", model=model)
        seconds.append(time.perf_counter() - started)
        text, duration = transcript.text, transcript.duration
    del engine
    gc.collect()
    return seconds, text, duration
