"""What a client's polling costs: ``python -m bench.polling [--runs 3] [--seconds 150]``.

One ``ytcaption worker``, the API under gunicorn (2 gevent workers, as deployed) and a loopback
media server. The long clip is submitted again and again while a client polls its status every
0.1 s, every 1 s (what ``Retry-After`` asks), or not at all (the benchmark then watches the job in
Redis), in turn, ``--runs`` times each. For each job: the CPU seconds the API's processes and
Redis spent while it ran (psutil, their whole process trees; with no client: what they spend
anyway, heartbeats and the worker's progress updates), and the job's own transcription time
(``timings.transcribe``), which the polling competes with for the cores. Printed per client: the
API's and Redis's CPU seconds per 180 s of polling, and the transcription time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from bench.e2e import _seconds_between
from bench.engine import SPEECH, make_long_clip
from bench.harness import FIXTURES, BenchError, Harness, http_json
from bench.report import Figure, Report

SECTION = "polling"
#: Seconds between two status requests of each client; None: no client (the job is watched in Redis).
CLIENTS = {"no client": None, "polls every 0.1 s": 0.1, "polls every 1 s (Retry-After)": 1.0}
#: The cost is given per this many seconds of a job's life.
PER_SECONDS = 180


def run(runs: int, seconds: int, keep: bool = False) -> Report:
    import psutil
    from rq.job import Job

    report = Report(mode=f"{runs} runs", machine={})
    with Harness(keep=keep) as h:
        h.start_redis()
        media = h.dir / "media"
        media.mkdir()
        for name in SPEECH:
            shutil.copy(FIXTURES / name, media / name)
        clip = make_long_clip(media, seconds)
        server = h.serve_media(media)
        api, key = h.api(), h.api_key()
        [worker] = h.start_workers("worker", 1, ["express"], queue="express")
        gunicorn = psutil.Process(h.children["api"].pid)
        servers = [gunicorn, *gunicorn.children(recursive=True), psutil.Process(h.redis_server.process.pid)]

        def cpu_seconds() -> float:
            return sum(sum(process.cpu_times()[:2]) for process in servers)

        def job(interval: float | None) -> tuple[float, float, dict]:
            """Run one job with a client polling every ``interval``; its life's seconds, the servers' CPU
            seconds meanwhile, and its final status."""
            code, body = http_json("POST", f"{api}/api/v1/transcribe/async/submit", key,
                                   {"youtube_url": server.url(clip.name)})
            if code != 202:
                raise BenchError(f"submit answered {code}: {body}")
            status_url, job_id = api + body["status_url"], body["job_id"]
            before = cpu_seconds()
            if interval is None:
                h.wait_until(lambda: Job.fetch(job_id, connection=h.redis).get_status() in ("finished", "failed"),
                             "the job to end", timeout=1800, watch=[worker], interval=0.5)
            else:
                h.wait_until(lambda: http_json("GET", status_url, key)[1].get("status") in ("completed", "failed"),
                             "the job to end", timeout=1800, watch=[worker], interval=interval)
            spent = cpu_seconds() - before
            status = http_json("GET", status_url, key)[1]
            if status["status"] != "completed":
                raise BenchError(f"the job did not complete: {status}")
            return _seconds_between(status["created_at"], status["ended_at"]), spent, status

        h.say("warm-up job, not counted")
        job(1.0)
        cost = {label: [] for label in CLIENTS}
        transcribe = {label: [] for label in CLIENTS}
        for number in range(runs):
            for label, interval in CLIENTS.items():
                life, spent, status = job(interval)
                cost[label].append(spent / life * PER_SECONDS)
                transcribe[label].append(status["result"]["timings"]["transcribe"])
                h.say(f"run {number + 1}, {label}: job {life:.1f} s, API and Redis {spent:.2f} CPU-s, "
                      f"transcription {transcribe[label][-1]:.2f} s")
        for label in CLIENTS:
            report.add(Figure(SECTION, f"{label}: API and Redis CPU-s per {PER_SECONDS} s", cost[label], unit="s"))
            report.add(Figure(SECTION, f"{label}: the job's transcription ({seconds} s of audio)",
                              transcribe[label], unit="s"))
    report.note(SECTION, "one `ytcaption worker express` (tiny.en), the API under gunicorn (2 gevent workers), "
                         "clients in turn; CPU = user + system seconds of gunicorn's and redis-server's processes "
                         "while the job ran, scaled to 180 s")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.polling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="jobs per client")
    parser.add_argument("--seconds", type=int, default=150, help="length of the clip transcribed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(args.runs, args.seconds, keep=args.keep)
    print(report.printed())
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
