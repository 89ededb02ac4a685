"""Section 3: submit throughput and latency of the API under load, beside a bare enqueue app.

Both run under gunicorn with 2 gevent workers on the same Redis, loaded alternately in the same
run with the same body (a YouTube URL: accepted without DNS and never downloaded, since no
worker runs during this section). The queue is emptied before every run, so a growing queue
cannot slow later runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from app.core.redis_server import free_port
from bench import load
from bench.bare_app import QUEUE
from bench.harness import YOUTUBE_URL, BenchError, Harness
from bench.report import Figure, Report

SECTION = "3 submit load"


@dataclass(frozen=True)
class LoadPlan:
    seconds: float
    runs: int
    connections: int
    warm_up_seconds: float


def run(h: Harness, report: Report, plan: LoadPlan) -> None:
    h.stop_matching("worker")  # nothing may consume the queue, or take CPU, under load
    api, key = h.api(), h.api_key()
    port = free_port()
    bare_command = [sys.executable, "-m", "gunicorn", "--config", "python:bench.bare_gunicorn_conf",
                    "--bind", f"127.0.0.1:{port}", "--workers", "2", "bench.bare_app:create_bare_app()"]
    bare = h.start_gunicorn("bare", bare_command, "/", port)
    targets = {
        "bare Flask enqueue": (bare + "/submit", {}),
        "ytcaption submit": (api + "/api/v1/transcribe/async/submit", {"Authorization": f"Bearer {key}"}),
    }
    body = {"youtube_url": YOUTUBE_URL}
    results: dict[str, list[load.LoadResult]] = {name: [] for name in targets}
    try:
        for url, headers in targets.values():
            load.post_load(url, body, headers, plan.warm_up_seconds, plan.connections, h.dir)
        for _ in range(plan.runs):
            for name, (url, headers) in targets.items():
                h.empty_queues(QUEUE)
                result = load.post_load(url, body, headers, plan.seconds, plan.connections, h.dir)
                if result.errors:
                    raise BenchError(f"{name}: {result.errors} of {result.requests} requests failed "
                                     f"(see {h.log_path('api')} or {h.log_path('bare')})")
                results[name].append(result)
    finally:
        h.empty_queues(QUEUE)
        h.stop("bare")

    ours, bare_runs = results["ytcaption submit"], results["bare Flask enqueue"]
    report.add(Figure(SECTION, "ytcaption submit throughput", [r.rate for r in ours], unit="req/s", digits=0))
    report.add(Figure(SECTION, "bare Flask enqueue throughput", [r.rate for r in bare_runs], unit="req/s",
                      digits=0))
    report.add(Figure(SECTION, "ytcaption / bare throughput (same run)",
                      [a.rate / b.rate for a, b in zip(ours, bare_runs)], unit="×", target=(">=", 0.5)))
    report.add(Figure(SECTION, "ytcaption submit latency p50", [r.p50_ms for r in ours], unit="ms", digits=1))
    report.add(Figure(SECTION, "ytcaption submit latency p99", [r.p99_ms for r in ours], unit="ms",
                      target=("<", 50.0), digits=1))
    report.add(Figure(SECTION, "bare Flask enqueue latency p50", [r.p50_ms for r in bare_runs], unit="ms",
                      digits=1))
    report.add(Figure(SECTION, "bare Flask enqueue latency p99", [r.p99_ms for r in bare_runs], unit="ms",
                      digits=1))
    total = sum(r.requests for r in ours)
    report.note(SECTION, f"load: {load.describe_tool()}, {plan.connections} connections, {plan.runs} runs of "
                         f"{plan.seconds:g} s per app, alternating; {total:,} ytcaption submits, none refused")
    report.note(SECTION, "ytcaption: POST /api/v1/transcribe/async/submit (auth, rate limit, quota, "
                         "validation, enqueue, metrics; gunicorn -c app.gunicorn_conf with its access log); "
                         "bare: bench/bare_app.py, one Queue.enqueue by import path (bench/bare_gunicorn_conf.py: "
                         "the same server model, no access log); both 2 gevent workers")
