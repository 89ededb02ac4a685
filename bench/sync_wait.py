"""What a transcript costs a client to wait for: ``python -m bench.sync_wait [--runs 5]``.

One ``ytcaption worker``, the API under gunicorn (2 gevent workers, as deployed). Each clip is
uploaded again and again, in turn by two clients: OpenAI's Python SDK on ``/v1/audio/transcriptions``
(one request, which waits for the job: the API is woken by Redis when the job's record changes),
and a client of the async API (upload, poll the status every ``Retry-After`` s, fetch the
transcript). Printed per client and clip: the wall time from the upload to the transcript in
hand, and how long after the job's end the client had it (the job's ``ended_at``, from Redis).
Needs the ``openai`` package (the test extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

from bench.engine import make_long_clip
from bench.harness import FIXTURES, BenchError, Harness
from bench.report import Figure, Report

SECTION = "waiting"


def run(runs: int, keep: bool = False) -> Report:
    import openai
    import requests
    from rq.job import Job

    report = Report(mode=f"{runs} runs", machine={})
    with Harness(keep=keep) as h:
        h.start_redis()
        clips = {"fox.m4a (3.4 s)": (FIXTURES / "fox.m4a").read_bytes(),
                 "30 s of speech": make_long_clip(h.dir, 30).path.read_bytes()}
        api, key = h.api(), h.api_key()
        h.start_workers("worker", 1, ["express"], queue="express")
        sdk = openai.OpenAI(base_url=api + "/v1", api_key=key, max_retries=0)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {key}"

        def ended_at(job_id: str) -> float:
            return Job.fetch(job_id, connection=h.redis).ended_at.replace(tzinfo=timezone.utc).timestamp()

        def with_the_sdk(name: str, data: bytes) -> tuple[float, float]:
            started = time.perf_counter()
            raw = sdk.audio.transcriptions.with_raw_response.create(model="whisper-1", file=(name, data))
            had, wall = datetime.now(timezone.utc).timestamp(), time.perf_counter() - started
            if raw.status_code != 200 or not raw.parse().text:
                raise BenchError(f"the SDK's call answered {raw.status_code}: {raw.text[:200]}")
            return wall, had - ended_at(raw.headers["X-Job-Id"])

        def polling(name: str, data: bytes) -> tuple[float, float]:
            started = time.perf_counter()
            accepted = http.post(f"{api}/api/v1/transcribe/async/submit", files={"file": (name, data)}, timeout=60)
            if accepted.status_code != 202:
                raise BenchError(f"the submit answered {accepted.status_code}: {accepted.text[:200]}")
            job_id = accepted.json()["job_id"]
            status_url = api + accepted.json()["status_url"]
            while (status := http.get(status_url, timeout=60)).json()["status"] not in ("completed", "failed"):
                time.sleep(float(status.headers.get("Retry-After", 1)))
            transcript = http.get(f"{api}/api/v1/transcriptions/{job_id}", params={"format": "json"}, timeout=60)
            had, wall = datetime.now(timezone.utc).timestamp(), time.perf_counter() - started
            if transcript.status_code != 200:
                raise BenchError(f"the job did not complete: {status.json()}")
            return wall, had - ended_at(job_id)

        clients = {"OpenAI SDK, one request": with_the_sdk, "upload, poll at Retry-After, fetch": polling}
        h.say("warm-up, not counted")
        with_the_sdk("fox.m4a", clips["fox.m4a (3.4 s)"])
        walls = {(client, clip): [] for client in clients for clip in clips}
        lags = {client: [] for client in clients}
        for number in range(runs):
            for clip, data in clips.items():
                for client, call in clients.items():
                    wall, lag = call("clip" + (".m4a" if "fox" in clip else ".wav"), data)
                    walls[client, clip].append(wall)
                    lags[client].append(lag)
                    h.say(f"run {number + 1}, {clip}, {client}: {wall:.2f} s, transcript in hand {lag:.3f} s "
                          f"after the job's end")
        for (client, clip), values in walls.items():
            report.add(Figure(SECTION, f"{client}: {clip}, upload to transcript", values, unit="s"))
        for client, values in lags.items():
            report.add(Figure(SECTION, f"{client}: transcript in hand after the job's end", values, unit="s"))
    report.note(SECTION, "one `ytcaption worker express` (tiny.en), the API under gunicorn (2 gevent workers); "
                         "clients in turn on loopback; the job's end is its ended_at in Redis")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_wait", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="uploads per client and clip")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = run(args.runs, keep=args.keep)
    print(report.printed())
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
