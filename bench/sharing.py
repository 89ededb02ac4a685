"""What the result cache saves: ``python -m bench.sharing [--hits 200]``.

One ``ytcaption worker``, the API under gunicorn (2 gevent workers, as deployed). A 30 s clip of
speech is uploaded once and transcribed (the full job: upload to ``completed``); then the same
clip is uploaded ``--hits`` times by other users, one after the other, each answered from the result
cache (``200``, ``cached: true``). Printed: the full job's time, and the cache hits' latency (p50
and p99 of the submit's round trip, the 30 s clip's 960 KB included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.engine import make_long_clip
from bench.harness import BenchError, Harness
from bench.report import Figure, Report

SECTION = "result cache"


def run(hits: int, keep: bool = False) -> Report:
    import requests

    from app.core.users import UserStore

    report = Report(mode=f"{hits} hits", machine={})
    with Harness(keep=keep) as h:
        h.start_redis()
        clip = make_long_clip(h.dir, 30).path.read_bytes()
        api = h.api()
        h.start_workers("worker", 1, ["express"], queue="express")
        users = UserStore(h.redis)
        keys = [users.create(f"cache{number}@example.com", "enterprise")[1] for number in range(5)]

        def upload(key: str) -> requests.Response:
            return requests.post(f"{api}/api/v1/transcribe/async/submit", files={"file": ("clip.wav", clip)},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=120)

        started = time.perf_counter()
        first = upload(keys[0])
        if first.status_code != 202:
            raise BenchError(f"the first upload answered {first.status_code}: {first.text[:200]}")
        status_url = api + first.json()["status_url"]
        while (state := requests.get(status_url, headers={"Authorization": f"Bearer {keys[0]}"},
                                     timeout=60).json())["status"] not in ("completed", "failed"):
            time.sleep(0.1)
        full = time.perf_counter() - started
        if state["status"] != "completed":
            raise BenchError(f"the first job did not complete: {state}")
        h.say(f"the full job: {full:.2f} s")

        latencies = []
        for number in range(hits):
            started = time.perf_counter()
            answer = upload(keys[1 + number % 4])
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200 or not answer.json().get("cached"):
                raise BenchError(f"submit {number} was not a cache hit: {answer.status_code} {answer.text[:200]}")
        cuts = statistics.quantiles(latencies, n=100)
        h.say(f"{hits} cache hits: p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms")
        report.add(Figure(SECTION, "full job, 30 s of speech: upload to completed", [full], unit="s"))
        report.add(Figure(SECTION, "cache hit: the submit's round trip, p50", [cuts[49]], unit="ms", digits=1))
        report.add(Figure(SECTION, "cache hit: the submit's round trip, p99", [cuts[98]], unit="ms", digits=1))
    report.note(SECTION, "one `ytcaption worker express` (tiny.en), the API under gunicorn (2 gevent workers); "
                         "the same 30 s WAV (960 KB) uploaded by other users, one at a time, on loopback")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sharing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hits", type=int, default=200, help="identical uploads answered from the cache")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(args.hits, keep=args.keep)
    print(report.printed())
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
