"""``python -m bench [--quick]``: run the benchmark, print its table, save it as JSON.

Exits 1 if a section crashed (its row says why); a missed target only prints MISS.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import accuracy, e2e, engine, load, memory, peer, pieces, queue_throughput, submit_load, tuning
from bench.harness import FIXTURES, Harness, python_version, versions
from bench.report import Report
from bench.submit_load import LoadPlan

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Profile:
    """How long and how often each section measures."""

    name: str
    long_clip_seconds: int
    engine_runs: int  # per fixture
    long_engine_runs: int
    e2e_runs: int  # per clip
    long_e2e_runs: int
    load: LoadPlan
    noop_jobs: int
    noop_runs: int
    tuning_runs: int  # 0: section 6 is skipped
    pieces_clip_seconds: int
    pieces_runs: int


QUICK = Profile("quick", long_clip_seconds=60, engine_runs=3, long_engine_runs=2, e2e_runs=3, long_e2e_runs=2,
                load=LoadPlan(seconds=2, runs=3, connections=8, warm_up_seconds=1), noop_jobs=300, noop_runs=2,
                tuning_runs=0, pieces_clip_seconds=240, pieces_runs=1)
FULL = Profile("full", long_clip_seconds=150, engine_runs=5, long_engine_runs=5, e2e_runs=5, long_e2e_runs=3,
               load=LoadPlan(seconds=5, runs=5, connections=8, warm_up_seconds=2), noop_jobs=2000, noop_runs=3,
               tuning_runs=3, pieces_clip_seconds=1200, pieces_runs=2)

SECTIONS = ("1", "2", "3", "4", "5", "6", "7", "8", "9")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="Run ytcaption's benchmark, print its table, save it as JSON.")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (CI: under 2 minutes)")
    parser.add_argument("--json", type=Path, help="where to save the results (default: bench/results/"
                                                   "latest.json, or quick.json with --quick)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated sections to run (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with every process's log")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown (README)")
    parser.add_argument("--peer", type=Path, metavar="PATH",
                        help="section 9: compare with whisper-asr-webservice, a checkout with its venv or its "
                             "command, installed by you (docs/performance.md); without it section 9 is skipped")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    wanted = set(args.sections.split(","))
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so every child process is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    started = time.monotonic()
    report = Report(mode=profile.name, machine=machine())
    with Harness(keep=args.keep) as h:
        h.say(f"bench ({profile.name}) in {h.dir}")
        run_sections(h, report, profile, wanted, args.peer)
        h.say("stopping everything")

    report.machine["wall_seconds"] = round(time.monotonic() - started, 1)
    report.machine["load_average_end"] = round(os.getloadavg()[0], 2)
    print(render(report))
    if args.markdown:
        print("\n" + report.markdown())
    path = args.json or RESULTS / ("quick.json" if args.quick else "latest.json")
    report.save(path)
    print(f"\nsaved {path}")
    return 1 if report.errors else 0


def run_sections(h: Harness, report: Report, profile: Profile, wanted: set[str], peer_path: Path | None) -> None:
    """Run the ``wanted`` sections; a section that raises is recorded in ``report.errors``."""

    def section(number: str, title: str, run: Callable[[], Any]) -> Any:
        if number not in wanted:
            return None
        h.say(title)
        try:
            return run()
        except Exception as exc:
            traceback.print_exc()
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            report.errors[title] = f"{exc.__class__.__name__}: {first_line}"
            return None

    h.start_redis()
    media = h.dir / "media"
    media.mkdir()
    for fixture in FIXTURES.iterdir():
        shutil.copy(fixture, media / fixture.name)
    fixtures = engine.fixture_clips(media)
    long_clip = engine.make_long_clip(media, profile.long_clip_seconds)
    clip_30s = engine.make_webm_clip(media, 30)  # a short video's audio: where a job's overhead shows most
    h.serve_media(media)
    by_name = {clip.name: clip for clip in fixtures}
    lecture, fox = by_name["lecture.webm"], by_name["fox.m4a"]
    engine_runs = {clip.name: profile.engine_runs for clip in [*fixtures, clip_30s]} | {
        long_clip.name: profile.long_engine_runs}
    # Twice the runs on the 30 s clip, whose ratio has a target: a few percent, in a shared machine's noise.
    e2e_runs = {lecture.name: profile.e2e_runs, clip_30s.name: 2 * profile.e2e_runs,
                long_clip.name: profile.long_e2e_runs}

    section("1", engine.SECTION, lambda: engine.run(report, [*fixtures, clip_30s, long_clip], engine_runs))
    section("2", e2e.SECTION, lambda: e2e.run(h, report, [lecture, clip_30s, long_clip], fox, e2e_runs))
    # 5 right after 2: it also notes the memory of section 2's worker after all its jobs.
    section("5", memory.SECTION, lambda: memory.run(h, report, lecture))
    section("3", submit_load.SECTION, lambda: submit_load.run(h, report, profile.load))
    section("4", queue_throughput.SECTION, lambda: queue_throughput.run(h, report, profile.noop_jobs,
                                                                        profile.noop_runs))
    if "8" in wanted:
        recording = engine.make_long_clip(media, profile.pieces_clip_seconds)
        section("8", pieces.SECTION, lambda: pieces.run(h, report, recording, profile.pieces_runs,
                                                        quick=profile is QUICK))
    if profile.tuning_runs:  # minutes of transcription: not in the quick run
        section("6", tuning.SECTION, lambda: tuning.run(report, long_clip, tuning.make_sparse_clip(media),
                                                        profile.tuning_runs))
    section("7", accuracy.SECTION, lambda: accuracy.run(report, h.dir / "accuracy", accuracy.PROFILES[profile.name],
                                                        h.say))
    if peer_path is None:  # a server the user installs: never in CI
        if "9" in wanted:
            h.say(f"{peer.SECTION}: skipped (no --peer PATH)")
    else:  # last: it stops the other sections' workers
        section("9", peer.SECTION, lambda: peer.run(h, report, media, peer_path, profile.name))


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        # Anything else running on the machine skews every figure: this says whether it did.
        "load_average_start": round(os.getloadavg()[0], 2),
        "cpu": _cpu_model(),
        "python": python_version(),
        "redis_server": _redis_version(),
        "load_tool": load.describe_tool(),
        "packages": versions(),
    }


def render(report: Report) -> str:
    m = report.machine
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    lines = [
        "",
        f"ytcaption benchmark ({report.mode}) — {m['date']}, {m['wall_seconds']} s",
        f"machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, redis-server {m['redis_server']}",
        f"packages: {packages}",
        f"load average (1 min) at start {m['load_average_start']}, at end {m['load_average_end']} "
        "(the bench itself loads the machine; a high figure at start means something else did too)",
        "",
        report.table(),
        "",
    ]
    for section, notes in sorted(report.notes.items()):
        lines += [f"{section}:"] + [f"  - {note}" for note in notes]
    for figure in report.figures:
        if figure.note and figure.median is None:
            lines.append(f"{figure.section} / {figure.name}: {figure.note}")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _redis_version() -> str:
    from app.core.redis_server import find_redis_server

    output = subprocess.run([find_redis_server(), "--version"], capture_output=True, text=True).stdout
    return next((part.split("=", 1)[1] for part in output.split() if part.startswith("v=")), output.strip())


if __name__ == "__main__":
    sys.exit(main())
