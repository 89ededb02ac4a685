"""Section 5: resident memory of a new ``ytcaption worker`` with the default model, after one real job.

RSS summed over the worker process and all its descendants (the worker, its engine host and
RQ's scheduler process; the work horse is gone once the job ended), sampled a few times. The notes break it down and give the tree's PSS, which counts shared pages once.
"""

from __future__ import annotations

import time

from bench.e2e import transcribe_via_api
from bench.engine import Clip
from bench.harness import Harness, process_tree_memory
from bench.report import Figure, Report

SECTION = "5 worker memory"
SAMPLES = 5
TARGET = ("<=", 400.0)


def sample(report: Report, pid: int, label: str, samples: int = SAMPLES) -> list[float]:
    """``samples`` sums of the tree's RSS; the last sample's breakdown goes in the notes."""
    values = []
    for _ in range(samples):
        processes = process_tree_memory(pid)
        values.append(sum(rss for rss, _ in processes.values()))
        time.sleep(0.2)
    report.note(SECTION, f"{label}: " + ", ".join(f"{name} {rss:.0f} MB" for name, (rss, _) in processes.items())
                + f"; the tree: RSS {values[-1]:.0f} MB, PSS {sum(pss for _, pss in processes.values()):.0f} MB")
    return values


def run(h: Harness, report: Report, clip: Clip) -> None:
    if h.children.get("worker-0") is not None:  # section 2's worker, after all its jobs: for the notes
        sample(report, h.children["worker-0"].pid, "the worker of section 2, after all its jobs", 1)
        h.stop("worker-0")
    report.note(SECTION, "RSS summed over the worker process and all its descendants, after one "
                         f"{clip.name} job in a new worker, {SAMPLES} samples 0.2 s apart")
    workers = h.start_workers("memory", 1, ["express"], queue="express")
    try:
        transcribe_via_api(h, clip)
        report.add(Figure(SECTION, "ytcaption worker: its process tree", sample(report, h.children[workers[0]].pid,
                                                                                  "a new worker"),
                          unit="MB", target=TARGET, digits=0))
    finally:
        h.stop(*workers)
