"""Section 4: no-op jobs per second through each kind of worker, 2 processes each, same Redis.

For each runner: start its processes and wait until they are ready (registered with RQ, or
answering Celery's ping: any model is loaded by then), then per run make N jobs available at
once and let them drain. RQ jobs are enqueued in one Redis transaction; Celery's consumer is
paused while its N messages are published, then resumed. Every job is ``bench.noop.noop``, which
pushes its end time to a Redis list; throughput = (N - 1) / (last end - first end).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rq import Queue

from bench import celery_noop
from bench.harness import BenchError, Harness
from bench.report import Figure, Report

SECTION = "4 no-op jobs"
NOOP = "bench.noop.noop"
PROCESSES = 2


@dataclass(frozen=True)
class Runner:
    label: str
    ran: str  # what exactly, for the notes
    queue: str
    start: Callable[[Harness], list[str]]
    celery: bool = False


def runners() -> list[Runner]:
    return [
        Runner("ytcaption worker", f"{PROCESSES} × `ytcaption worker batch` (RQ's HerokuWorker: a work horse "
               "forked per job; each worker with its engine host; ENGINE_MAX_JOBS=0, see below)", "batch",
               _start_ytcaption),
        Runner("plain rq worker", f"{PROCESSES} × `rq worker bench-rq` (RQ {_version('rq')} Worker, "
               "a work horse forked per job)", "bench-rq", _start_rq),
        Runner("Celery prefork worker", f"1 × `celery worker -P prefork -c {PROCESSES}` (Celery "
               f"{_version('celery')}, Redis broker and result backend, default prefetch)",
               celery_noop.QUEUE, _start_celery, celery=True),
    ]


def run(h: Harness, report: Report, jobs: int, runs: int) -> None:
    h.stop_matching("worker")  # the transcription worker of sections 2 and 5 must not take CPU
    rates: dict[str, list[float]] = {}
    for runner in runners():
        h.say(f"  {runner.label}: starting")
        names = runner.start(h)
        h.say(f"  {runner.label}: ready")
        try:
            rates[runner.label] = [_drain(h, runner, jobs, f"bench:stamps:{runner.queue}:{index}", names)
                                   for index in range(runs)]
        finally:
            h.stop(*names)
            h.empty_queues(runner.queue)
        report.note(SECTION, f"{runner.label}: {runner.ran}")
        report.add(Figure(SECTION, runner.label, rates[runner.label], unit="jobs/s", digits=0))
    _compare(report, rates)
    report.note(SECTION, f"{jobs:,} jobs per run, {runs} runs per runner; every job runs bench.noop.noop (one "
                         "RPUSH); all workers log at INFO to a file, as deployed")
    report.note(SECTION, "ENGINE_MAX_JOBS=0 for the ytcaption workers here: by default the engine host is "
                         "restarted (model reloaded) every 50 jobs, no-op jobs included")


def _compare(report: Report, rates: dict[str, list[float]]) -> None:
    ours, plain = rates.get("ytcaption worker"), rates.get("plain rq worker")
    report.add(Figure(SECTION, "ytcaption worker / plain rq worker",
                      [a / b for a, b in zip(ours, plain)] if ours and plain else [], unit="×"))


def _drain(h: Harness, runner: Runner, jobs: int, key: str, names: list[str]) -> float:
    """Make ``jobs`` no-op jobs available at once; wait for all; return jobs per second."""
    h.redis.delete(key)
    if runner.celery:
        _publish_celery(h, jobs, key)
    else:
        _enqueue_rq(h, runner.queue, jobs, key)
    failed = Queue(runner.queue, connection=h.redis).failed_job_registry

    def finished() -> bool:
        if not runner.celery and failed.count:
            job = failed.get_job_ids()[0]
            raise BenchError(f"{runner.label}: no-op job {job} failed; see the logs of {', '.join(names)}")
        return h.redis.llen(key) >= jobs

    h.wait_until(finished, f"{jobs} no-op jobs on {runner.label}", timeout=60 + jobs / 20, watch=names,
                 interval=0.1)
    stamps = sorted(float(value) for value in h.redis.lrange(key, 0, -1))
    h.redis.delete(key)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _enqueue_rq(h: Harness, queue_name: str, jobs: int, key: str) -> None:
    queue = Queue(queue_name, connection=h.redis)
    data = [Queue.prepare_data(NOOP, args=(h.redis_url, key)) for _ in range(jobs)]
    with h.redis.pipeline() as pipe:  # one MULTI/EXEC: the workers see all jobs at once
        queue.enqueue_many(data, pipeline=pipe)
        pipe.execute()


def _publish_celery(h: Harness, jobs: int, key: str) -> None:
    app = celery_noop.configure(h.redis_url)
    if not app.control.cancel_consumer(celery_noop.QUEUE, reply=True, limit=1, timeout=5):
        raise BenchError("the Celery worker did not pause its consumer")
    for _ in range(jobs):
        celery_noop.noop.apply_async(args=(h.redis_url, key))
    if not app.control.add_consumer(celery_noop.QUEUE, reply=True, limit=1, timeout=5):
        raise BenchError("the Celery worker did not resume its consumer")


# --- starting each runner --------------------------------------------------------------------


def _start_ytcaption(h: Harness) -> list[str]:
    return h.start_workers("ytc", PROCESSES, ["batch"], queue="batch", env=h.env(ENGINE_MAX_JOBS="0"))


def _start_rq(h: Harness) -> list[str]:
    rq = Path(sys.executable).with_name("rq")
    names = [f"rq-{index}" for index in range(PROCESSES)]
    for name in names:
        h.spawn(name, [str(rq), "worker", "--url", h.redis_url, "bench-rq"])
    h.wait_for_rq_workers("bench-rq", PROCESSES, names)
    return names


def _start_celery(h: Harness) -> list[str]:
    h.spawn("celery", [sys.executable, "-m", "celery", "-A", "bench.celery_noop", "worker", "-P", "prefork",
                       "-c", str(PROCESSES), "-Q", celery_noop.QUEUE, "-l", "INFO", "-n", "bench@%h",
                       "--without-gossip", "--without-mingle"])
    app = celery_noop.configure(h.redis_url)
    h.wait_until(lambda: app.control.ping(timeout=0.5), "the Celery worker to answer a ping", timeout=60,
                 watch=["celery"])
    return ["celery"]


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)

