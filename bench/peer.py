"""Section 9 (``--peer PATH`` only): ytcaption against whisper-asr-webservice, side by side in one run.

Both transcribe the same clips with the same model (the bundled tiny.en CTranslate2 directory),
compute type and beam (5), and the same voice-activity setting (ytcaption's, passed to the peer
as ``vad_filter``). ytcaption runs as deployed, its API under gunicorn and ``ytcaption worker``
processes fetching each clip by URL from the loopback media server, first with one worker (all
cores), then with two (the cores shared between them: one thread each on 2 cores); the peer runs as its README says, one
uvicorn process taking the file in the request. Only one system works at a time.

- **Load**: 8 clients at once, each sending a 30 s clip twice in a row: audio seconds
  transcribed per wall second, and each request's latency as its client waited it (ytcaption:
  submit, then the status polled every 0.25 s until completed; the peer: the request).
- **Single requests** on a 30 s and a 180 s clip, one at a time, with the engine alone in this
  process (section 1's way) for reference, taken in turns so that a busier moment of a shared
  machine falls on all three.
- **Responsiveness**: while each 180 s clip transcribes, a cheap route is timed every 0.5 s:
  ytcaption's ``/healthz``, the peer's ``/docs`` (it has no health route).
- **WER** of every transcript against the text the clip says, so that equal quality is shown.
"""

from __future__ import annotations

import gc
import os
import statistics
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.core.settings import Settings
from bench.engine import SAMPLE_RATE, SPEECH, Clip
from bench.harness import FIXTURES, Harness
from bench.peer_clients import EngineAlone, Load, Probe, System, Ytcaption, concurrent_load, warm_up
from bench.peer_server import Peer, Result
from bench.report import Figure, Report
from bench.tuning import reference_text

SECTION = "9 peer"
SHORT, LONG = 30, 180  # seconds of the two clips
CLIENTS, REQUESTS_EACH = 8, 2
ONE_WORKER, TWO_WORKERS = "ytcaption 1 worker", "ytcaption 2 workers"


@dataclass(frozen=True)
class Plan:
    rounds: int  # load runs of each system, in turns
    single_runs: int  # single requests of each system on each clip


PLANS = {"quick": Plan(rounds=1, single_runs=1), "full": Plan(rounds=2, single_runs=3)}


def make_speech_clip(directory: Path, seconds: int) -> Clip:
    """``seconds`` of the speech fixtures played whole, one after another with 0.5 s between, then silence.

    Whole pieces only, so the clip says exactly ``bench.tuning.reference_text(seconds)``.
    """
    import numpy as np
    from faster_whisper.audio import decode_audio

    pieces = [decode_audio(str(FIXTURES / name), sampling_rate=SAMPLE_RATE) for name in SPEECH]
    pause = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    total = seconds * SAMPLE_RATE
    chunks, length, index = [], 0, 0
    while length + len(pieces[index % len(pieces)]) + len(pause) <= total:
        chunks += [pieces[index % len(pieces)], pause]
        length += len(pieces[index % len(pieces)]) + len(pause)
        index += 1
    audio = np.concatenate([*chunks, np.zeros(total - length, dtype=np.float32)])
    path = directory / f"speech-{seconds}s.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return Clip(path.name, path)


@contextmanager
def ytcaption_workers(h: Harness, label: str, workers: int, warm_up_clip: Clip) -> Iterator[Ytcaption]:
    """``workers`` × ``ytcaption worker express``, the cores shared among them, warmed up; stopped after."""
    names = h.start_workers("peer-ytcaption", workers, ["express"], queue="express",
                            env=h.env(WHISPER_CPU_THREADS=str(threads_per_worker(workers))))
    try:
        system = Ytcaption(h, label)
        warm_up(system, warm_up_clip, workers)
        yield system
    finally:
        h.stop(*names)


def threads_per_worker(workers: int) -> int:
    """The cores this process may use, shared among ``workers`` (at least one thread each)."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def run(h: Harness, report: Report, media: Path, peer_path: Path, mode: str) -> None:
    plan, settings = PLANS[mode], Settings.load()
    short, long = make_speech_clip(media, SHORT), make_speech_clip(media, LONG)
    fox = Clip("fox.m4a", media / "fox.m4a")
    load_averages = [os.getloadavg()[0]]
    # Earlier sections' workers listen on the same queue: only this section's may transcribe.
    h.stop_matching("worker-")
    peer = Peer(h, peer_path, settings)
    try:
        warm_up(peer, fox, 1)
        description = peer.describe()
        loads: dict[str, list[Load]] = {peer.label: [], ONE_WORKER: [], TWO_WORKERS: []}
        for round_ in range(1, plan.rounds + 1):
            h.say(f"{SECTION}: round {round_} of {plan.rounds}, {CLIENTS} clients at once on the peer")
            loads[peer.label].append(concurrent_load(peer, short, SHORT, CLIENTS, REQUESTS_EACH))
            for label, workers in ((ONE_WORKER, 1), (TWO_WORKERS, 2)):
                h.say(f"{SECTION}: round {round_} of {plan.rounds}, {CLIENTS} clients at once on {label}")
                with ytcaption_workers(h, label, workers, fox) as ytcaption:
                    loads[label].append(concurrent_load(ytcaption, short, SHORT, CLIENTS, REQUESTS_EACH))
        load_averages.append(os.getloadavg()[0])
        singles, probes = single_requests(h, peer, settings, [short, long], fox, plan.single_runs)
    finally:
        h.stop("peer")
    load_averages.append(os.getloadavg()[0])

    add_load_figures(report, loads, peer.label)
    add_single_figures(report, singles, probes, [short, long])
    add_wer_figures(report, loads, singles, [short, long])
    add_notes(report, peer, description, settings, plan, loads, singles, [short, long])
    report.note(SECTION, "load average (1 min) at the section's start, after the load runs, at its end: "
                + ", ".join(f"{value:.2f}" for value in load_averages))


def stages_note(what: str, results: list[Result]) -> str:
    """Where ytcaption's jobs spent their time: the median of each stage the job's status gives."""
    stages = results[0].stages or {}
    return f"{what}, the job's stages (median s): " + ", ".join(
        f"{stage} {statistics.median(result.stages[stage] for result in results):.2f}" for stage in stages)


def single_requests(h: Harness, peer: Peer, settings: Settings, clips: list[Clip], warm_up_clip: Clip,
                    runs: int) -> tuple[dict[tuple[str, str], list[Result]], dict[str, list[list[float]]]]:
    """Each clip through the engine alone, the peer and ytcaption (1 worker), in turns, ``runs`` times.

    Returns the results by (system, clip) and, for the longest clip, the probe's seconds by system.
    """
    results: dict[tuple[str, str], list[Result]] = {}
    probes: dict[str, list[list[float]]] = {}
    engine = EngineAlone(settings, warm_up_clip)
    try:
        with ytcaption_workers(h, ONE_WORKER, 1, warm_up_clip) as ytcaption:
            probe_urls = {peer.label: peer.url + peer.probe_path, ytcaption.label: ytcaption.url + ytcaption.probe_path}
            for run in range(1, runs + 1):
                h.say(f"{SECTION}: single requests, run {run} of {runs}")
                for clip in clips:
                    for system in (engine, peer, ytcaption):
                        url = probe_urls.get(system.label) if clip is clips[-1] else None
                        results.setdefault((system.label, clip.name), []).append(
                            _probed(system, clip, url, probes.setdefault(system.label, [])))
    finally:
        del engine
        gc.collect()
    return results, probes


def _probed(system: System, clip: Clip, probe_url: str | None, samples: list[list[float]]) -> Result:
    if probe_url is None:
        return system.transcribe(clip)
    with Probe(probe_url) as probe:
        result = system.transcribe(clip)
    samples.append(probe.seconds)
    return result


def add_load_figures(report: Report, loads: dict[str, list[Load]], peer_label: str) -> None:
    for label, runs in loads.items():
        report.add(Figure(SECTION, f"{label}: throughput, {CLIENTS} clients × {REQUESTS_EACH} × {SHORT} s",
                          [load.audio_per_second for load in runs], unit="audio-s/s"))
        report.add(Figure(SECTION, f"{label}: latency p50 under load", [load.latency(50) for load in runs], unit="s"))
        report.add(Figure(SECTION, f"{label}: latency p95 under load", [load.latency(95) for load in runs], unit="s"))
    for label in (ONE_WORKER, TWO_WORKERS):
        pairs = list(zip(loads[label], loads[peer_label]))
        report.add(Figure(SECTION, f"{label} / peer: throughput (same round)",
                          [ours.audio_per_second / theirs.audio_per_second for ours, theirs in pairs],
                          unit="×", target=(">=", 1.25)))
        report.add(Figure(SECTION, f"{label} / peer: latency p95 (same round)",
                          [ours.latency(95) / theirs.latency(95) for ours, theirs in pairs],
                          unit="×", target=("<=", 0.75)))


def add_single_figures(report: Report, singles: dict[tuple[str, str], list[Result]],
                       probes: dict[str, list[list[float]]], clips: list[Clip]) -> None:
    for clip in clips:
        alone = singles[("engine alone", clip.name)]
        for label in ("engine alone", "peer", ONE_WORKER):
            report.add(Figure(SECTION, f"single request, {clip.name}: {label}",
                              [result.seconds for result in singles[(label, clip.name)]], unit="s"))
        ours = singles[(ONE_WORKER, clip.name)]
        report.add(Figure(SECTION, f"single request, {clip.name}: {ONE_WORKER}, the job's own time",
                          [result.job_seconds for result in ours], unit="s",
                          note="its ended_at - created_at: download, queue, engine, store; not the client's polling"))
        report.add(Figure(SECTION, f"{ONE_WORKER} / engine alone: single request, {clip.name}",
                          [result.seconds / base.seconds for result, base in zip(ours, alone)],
                          unit="×", target=("<=", 1.05)))
        report.add(Figure(SECTION, f"peer / engine alone: single request, {clip.name}",
                          [result.seconds / base.seconds for result, base in zip(singles[("peer", clip.name)], alone)],
                          unit="×"))
    for label, route in ((ONE_WORKER, "/healthz"), ("peer", "/docs")):
        runs = probes.get(label, [])
        report.add(Figure(SECTION, f"{label}: {route} during a {LONG} s transcription, p50",
                          [statistics.median(seconds) * 1000 for seconds in runs], unit="ms", digits=1))
        report.add(Figure(SECTION, f"{label}: {route} during a {LONG} s transcription, slowest",
                          [max(seconds) * 1000 for seconds in runs], unit="ms", digits=1))


def add_wer_figures(report: Report, loads: dict[str, list[Load]], singles: dict[tuple[str, str], list[Result]],
                    clips: list[Clip]) -> None:
    """The word error rate of every transcript, by system and clip, against what the clip says."""
    from tests.helpers import word_error_rate

    texts = {key: [result.text for result in results] for key, results in singles.items()}
    for label, runs in loads.items():
        texts.setdefault((label, clips[0].name), []).extend(result.text for load in runs for result in load.results)
    for clip, seconds in zip(clips, (SHORT, LONG)):
        reference = reference_text(seconds)
        for label in ("engine alone", "peer", ONE_WORKER, TWO_WORKERS):
            if (label, clip.name) in texts:
                report.add(Figure(SECTION, f"WER, {clip.name}: {label}",
                                  [word_error_rate(reference, text) for text in texts[(label, clip.name)]], digits=3))


def add_notes(report: Report, peer: Peer, description: str, settings: Settings, plan: Plan,
              loads: dict[str, list[Load]], singles: dict[tuple[str, str], list[Result]], clips: list[Clip]) -> None:
    """What exactly ran, and where ytcaption's jobs spent their time."""
    report.note(SECTION, f"peer: {description}, one uvicorn process ({peer.path}); "
                         + " ".join(f"{name}={value}" for name, value in peer.environment.items())
                         + f"; beam 5 (its fixed value), vad_filter={str(peer.vad_filter).lower()}, cpu_threads "
                         f"not set (faster-whisper's default: 4, or OMP_NUM_THREADS: "
                         f"{os.environ.get('OMP_NUM_THREADS', '-')})")
    report.note(SECTION, f"ytcaption: API under gunicorn (2 gevent workers); {ONE_WORKER}: WHISPER_CPU_THREADS="
                         f"{threads_per_worker(1)}; {TWO_WORKERS}: WHISPER_CPU_THREADS={threads_per_worker(2)} "
                         f"each; beam {settings.whisper_beam_size}, {settings.whisper_compute_type}, "
                         f"WHISPER_VAD_FILTER={str(settings.whisper_vad_filter).lower()}, "
                         f"WHISPER_CONDITION_ON_PREVIOUS_TEXT={str(settings.whisper_condition_on_previous_text).lower()}"
                         f", WHISPER_TEMPERATURE_FALLBACK={str(settings.whisper_temperature_fallback).lower()} (the "
                         "peer's API sets neither: faster-whisper's defaults, both on); clips fetched by URL (yt-dlp) "
                         "from the loopback media server; single requests on 1 worker")
    report.note(SECTION, f"load: {CLIENTS} clients at once, each sending {clips[0].name} {REQUESTS_EACH} times in a "
                         f"row; throughput = audio seconds / wall seconds to the last answer; {plan.rounds} round(s), "
                         "the systems in turns; ytcaption latency = submit to the status that says completed, "
                         "polled every 0.25 s; WER against the text the clip says (whole fixtures, then silence)")
    for label in (ONE_WORKER, TWO_WORKERS):
        under_load = [result for load in loads[label] for result in load.results]
        report.note(SECTION, stages_note(f"{label}, {CLIENTS} clients", under_load))
    for clip in clips:
        report.note(SECTION, stages_note(f"{ONE_WORKER}, single requests on {clip.name}",
                                         singles[(ONE_WORKER, clip.name)]))
