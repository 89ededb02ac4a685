"""Section 1: the engine's real-time factor, in this process, without queue or HTTP.

RTF = seconds ``FasterWhisperEngine.transcribe`` takes (decoding included, model already
loaded) / seconds of audio. Lower is faster: 0.05 means 20× faster than real time.
"""

from __future__ import annotations

import gc
import statistics
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from app.core.settings import Settings
from bench.harness import FIXTURES
from bench.report import Figure, Report

SECTION = "1 engine RTF"
SAMPLE_RATE = 16000
#: The speech fixtures the long clip is made of, in this order, again and again.
SPEECH = ("lecture.webm", "queue.webm", "fox.m4a")


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path


def fixture_clips(directory: Path) -> list[Clip]:
    """The committed fixtures, as copied into ``directory`` (which the media server serves)."""
    return [Clip(path.name, directory / path.name) for path in sorted(FIXTURES.iterdir())
            if path.suffix in (".webm", ".m4a")]


def make_long_clip(directory: Path, seconds: int) -> Clip:
    """A ``seconds`` long WAV (16 kHz mono) of the speech fixtures played one after another."""
    samples = _speech(seconds)
    path = directory / f"long-{seconds}s.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return Clip(path.name, path)


def make_webm_clip(directory: Path, seconds: int) -> Clip:
    """The same speech as ``make_long_clip``, ``seconds`` long, as WebM / Opus at 32 kb/s: what a
    video's audio track is like (a 30 s one is about 120 kB), where the WAV is ten times larger."""
    import av

    path = directory / f"speech-{seconds}s.webm"
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = 32000
        frame = av.AudioFrame.from_ndarray(_speech(seconds).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return Clip(path.name, path)


def _speech(seconds: int):
    """``seconds`` of the speech fixtures one after another (half a second apart), 16-bit samples."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    pieces = [decode_audio(str(FIXTURES / name), sampling_rate=SAMPLE_RATE) for name in SPEECH]
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    chunks, length, index = [], 0, 0
    while length < seconds * SAMPLE_RATE:
        piece = pieces[index % len(pieces)]
        chunks += [piece, pause]
        length += len(piece) + len(pause)
        index += 1
    audio = np.concatenate(chunks)[: seconds * SAMPLE_RATE]
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")


def run(report: Report, clips: list[Clip], runs: dict[str, int]) -> dict[str, float]:
    """Transcribe each clip ``runs[clip.name]`` times; return its median seconds, by name."""
    from workers.engines import FasterWhisperEngine

    settings = Settings.load()
    engine = FasterWhisperEngine(settings)
    model = settings.default_model_name
    _, load_seconds = engine.load(model)  # loaded once, before any timing
    engine.transcribe(str(clips[0].path), language=None, model=model)  # warm-up, not counted
    report.note(SECTION, f"FasterWhisperEngine in-process: {model}, {settings.whisper_compute_type}, "
                         f"beam {settings.whisper_beam_size}, WHISPER_CPU_THREADS={settings.whisper_cpu_threads}; "
                         f"model loaded once in {load_seconds:.2f} s before timing")
    medians: dict[str, float] = {}
    for clip in clips:
        seconds, duration = [], 0.0
        for _ in range(runs[clip.name]):
            started = time.perf_counter()
            transcript = engine.transcribe(str(clip.path), language=None, model=model)
            seconds.append(time.perf_counter() - started)
            duration = transcript.duration
        medians[clip.name] = statistics.median(seconds)
        report.add(Figure(SECTION, f"{clip.name} ({duration:.1f} s audio)", [s / duration for s in seconds],
                          unit="×", digits=3,
                          note=f"median {medians[clip.name]:.2f} s for {duration:.1f} s of audio"))
    report.note(SECTION, "raw engine seconds (median): "
                + ", ".join(f"{name} {value:.2f} s" for name, value in medians.items()))
    del engine
    gc.collect()
    return medians
