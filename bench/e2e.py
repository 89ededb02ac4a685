"""Section 2: a whole job through the API, Redis and ``ytcaption worker``, against the engine alone.

Each clip is submitted with ``POST /api/v1/transcribe/async/submit`` (its URL on the loopback
media server, fetched by yt-dlp's generic extractor) and its status polled until completed.
End-to-end = the job's ``ended_at - created_at`` from its status document (the API creates the
job just before enqueueing it; the worker ends it once the transcript is stored), so the poll
interval neither blurs nor slows the figure; the ratio divides it by section 1's median engine
time on the same clip.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

from bench.engine import Clip
from bench.harness import BenchError, Harness, http_json
from bench.report import Figure, Report

SECTION = "2 end-to-end"
POLL_INTERVAL = 0.1
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


def run(h: Harness, report: Report, clips: list[Clip], warm_up: Clip, runs: dict[str, int],
        engine_seconds: dict[str, float]) -> None:
    start_worker(h)
    transcribe_via_api(h, warm_up)  # the first job of a worker pays for imports: not counted
    report.note(SECTION, "API: gunicorn, 2 gevent workers, app.gunicorn_conf; worker: one `ytcaption worker "
                         "express` (forking, its engine host holding tiny.en); media: loopback HTTP, yt-dlp "
                         "generic extractor; end-to-end = the job's ended_at - created_at")
    for clip in clips:
        totals, timings = [], {stage: [] for stage in STAGES}
        for _ in range(runs[clip.name]):
            total, result = transcribe_via_api(h, clip)
            totals.append(total)
            for stage in STAGES:
                timings[stage].append(result["timings"].get(stage, 0.0))
        duration = result["duration"]
        report.add(Figure(SECTION, f"{clip.name} end-to-end job time ({duration:.0f} s audio)", totals, unit="s"))
        raw = engine_seconds.get(clip.name)
        report.add(Figure(SECTION, f"{clip.name} end-to-end / engine alone",
                          [total / raw for total in totals] if raw else [], unit="×", target=("<=", 1.10),
                          note="" if raw else "no engine time from section 1"))
        report.note(SECTION, f"{clip.name} job timings (median s): "
                    + ", ".join(f"{stage} {statistics.median(values):.3f}" for stage, values in timings.items())
                    + (f"; engine alone {raw:.2f} s" if raw else ""))


def _seconds_between(start: str, end: str) -> float:
    def parse(moment: str) -> datetime:
        return datetime.fromisoformat(moment.replace("Z", "+00:00"))

    return (parse(end) - parse(start)).total_seconds()
