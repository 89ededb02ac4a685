"""Section 2: a whole job through the API, Redis and ``ytcaption worker``, against the engine alone.

Each clip is submitted with ``POST /api/v1/transcribe/async/submit`` (its URL on the loopback
media server, fetched by yt-dlp's generic extractor) and its status polled until completed.
End-to-end = the job's ``ended_at - created_at`` from its status document (the API creates the
job just before enqueueing it; the worker ends it once the transcript is stored), so the poll
interval does not blur the figure. The ratio divides each job's time by the engine's alone on the
same clip, timed in this process just before or just after the job, in turn (``FasterWhisperEngine``,
as section 1): on a machine shared with other work, a ratio of two figures taken minutes apart
measured the load's changes as much as the job's overhead.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

from app.core.settings import Settings
from bench.engine import Clip
from bench.harness import BenchError, Harness, http_json
from bench.report import Figure, Report

SECTION = "2 end-to-end"
#: Seconds between two status requests, as docs/api.md advises: polling every 0.1 s cost the
#: machine's cores about 1.3 CPU-s per 3 minutes, beside the transcription measured.
POLL_INTERVAL = 1.0
#: End-to-end ÷ engine alone: what a job may add to the engine's own time.
TARGET_RATIO = 1.05
STAGES = ("queued", "download", "model_load", "transcribe", "store")


def transcribe_via_api(h: Harness, clip: Clip, timeout: float = 600) -> tuple[float, dict]:
    """Submit ``clip`` and poll until it completes; return its end-to-end seconds and its result."""
    api, key = h.api(), h.api_key()
    started = time.perf_counter()
    code, body = http_json("POST", api + "/api/v1/transcribe/async/submit", key,
                           {"youtube_url": h.media.url(clip.name)})
    if code != 202:
        raise BenchError(f"submit of {clip.name} answered {code}: {body}")
    status_url = api + body["status_url"]
    deadline = started + timeout
    while True:
        code, status = http_json("GET", status_url, key)
        if code == 200 and status["status"] == "completed":
            return _seconds_between(status["created_at"], status["ended_at"]), status["result"]
        if code != 200 or status["status"] in ("failed", "cancelled") or "last_error" in status:
            raise BenchError(f"job for {clip.name} did not complete: {status}")
        if time.perf_counter() > deadline:
            raise BenchError(f"job for {clip.name} still {status['status']} after {timeout:.0f} s")
        h.check_alive(*h.children)
        time.sleep(POLL_INTERVAL)


def start_worker(h: Harness) -> None:
    """One ``ytcaption worker express`` (the default, forking mode), as deployed."""
    if h.children.get("worker-0") is None:
        h.start_workers("worker", 1, ["express"], queue="express")


def run(h: Harness, report: Report, clips: list[Clip], warm_up: Clip, runs: dict[str, int]) -> None:
    from workers.engines import FasterWhisperEngine

    start_worker(h)
    transcribe_via_api(h, warm_up)  # the first job of a worker pays for imports: not counted
    settings = Settings.load()
    engine, model = FasterWhisperEngine(settings), settings.default_model_name
    engine.load(model)
    engine.transcribe(str(warm_up.path), language=None, model=model)  # warm-up, not counted
    report.note(SECTION, "API: gunicorn, 2 gevent workers, app.gunicorn_conf; worker: one `ytcaption worker "
                         "express` (forking, its engine host holding tiny.en); media: loopback HTTP, yt-dlp "
                         "generic extractor; end-to-end = the job's ended_at - created_at, divided by the "
                         "engine's own time on the clip (in the benchmark's process) just before or after the "
                         "job, in turn")
    for clip in clips:
        totals, alone, timings = [], [], {stage: [] for stage in STAGES}
        for number in range(runs[clip.name]):
            def engine_alone() -> None:
                started = time.perf_counter()
                engine.transcribe(str(clip.path), language=None, model=model)
                alone.append(time.perf_counter() - started)

            if number % 2:  # in turn first and second: neither gets the machine's rest (or its turbo) more often
                engine_alone()
            total, result = transcribe_via_api(h, clip)
            if not number % 2:
                engine_alone()
            totals.append(total)
            for stage in STAGES:
                timings[stage].append(result["timings"].get(stage, 0.0))
        duration = result["duration"]
        report.add(Figure(SECTION, f"{clip.name} end-to-end job time ({duration:.0f} s audio)", totals, unit="s"))
        report.add(Figure(SECTION, f"{clip.name} end-to-end / engine alone",
                          [total / raw for total, raw in zip(totals, alone)], unit="×",
                          target=("<=", TARGET_RATIO)))
        report.note(SECTION, f"{clip.name} job timings (median s): "
                    + ", ".join(f"{stage} {statistics.median(values):.3f}" for stage, values in timings.items())
                    + f"; engine alone {statistics.median(alone):.2f} s")


def _seconds_between(start: str, end: str) -> float:
    def parse(moment: str) -> datetime:
        return datetime.fromisoformat(moment.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()
