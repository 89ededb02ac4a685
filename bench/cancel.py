"""How soon a worker takes its next job after a cancel: ``python -m bench.cancel [--runs 5]``.

One ``ytcaption worker`` (its engine host, the bundled model), the API under gunicorn, a loopback
media server. Each run submits a clip of noise (made with ``sox``: Whisper finds no speech in it, so
the engine host sends the job nothing while it works), waits until the engine host is transcribing
it, submits a 3 s speech clip behind it and cancels the noise. Printed per run, then as median and
maximum: the next job's start delay (cancel to RQ's start of that job), its completion (cancel to
completed) and how long it waited for its own transcription (``timings.transcribe``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

from rq.job import Job

from app.core.processes import children, cpu_seconds
from bench.harness import FIXTURES, BenchError, Harness, http_json

API = "/api/v1/transcribe/async"


def run(runs: int, noise_seconds: int, keep: bool = False) -> list[dict[str, float]]:
    with Harness(keep=keep) as h:
        h.start_redis()
        media = h.dir / "media"
        media.mkdir()
        shutil.copy(FIXTURES / "fox.m4a", media / "fox.m4a")
        subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", str(media / "noise.wav"),
                        "synth", str(noise_seconds), "whitenoise", "vol", "0.05"], check=True)
        server = h.serve_media(media)
        api, key = h.api(), h.api_key()
        [worker] = h.start_workers("worker", 1, [], "express")
        worker_pid = h.children[worker].pid

        def submit(name: str) -> str:
            code, body = http_json("POST", f"{api}{API}/submit", key, {"youtube_url": server.url(name)})
            if code != 202:
                raise BenchError(f"submit answered {code}: {body}")
            return body["job_id"]

        def status(job_id: str) -> dict:
            return http_json("GET", f"{api}{API}/status/{job_id}", key)[1]

        rows = []
        for number in range(1, runs + 1):
            noisy = submit("noise.wav")
            h.wait_until(lambda: status(noisy).get("stage") == "transcribing", "the noise to reach the engine",
                         timeout=120, watch=[worker])
            host = next(pid for pid in children(worker_pid) if os.getsid(pid) == pid)  # its own session
            busy_from = cpu_seconds(host)
            h.wait_until(lambda: cpu_seconds(host) > busy_from + 1, "the engine host to transcribe the noise",
                         timeout=60, watch=[worker])
            following = submit("fox.m4a")
            cancelled_at, cancelled_wall = time.monotonic(), datetime.now(timezone.utc)
            code, body = http_json("DELETE", f"{api}{API}/cancel/{noisy}", key)
            if code not in (200, 202):
                raise BenchError(f"cancel answered {code}: {body}")
            h.wait_until(lambda: status(following).get("status") == "completed", "the next job to complete",
                         timeout=900, watch=[worker], interval=0.02)
            completed = time.monotonic() - cancelled_at
            started = (Job.fetch(following, connection=h.redis).started_at - cancelled_wall).total_seconds()
            row = {"start_delay_s": round(started, 2), "completed_s": round(completed, 2),
                   "transcribe_s": status(following)["result"]["timings"]["transcribe"]}
            h.say(f"run {number}: {row}")
            rows.append(row)
            h.wait_until(lambda: status(noisy).get("status") == "cancelled", "the cancel to be recorded",
                         timeout=60, watch=[worker])
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cancel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--noise-seconds", type=int, default=90, help="length of the cancelled clip")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    rows = run(args.runs, args.noise_seconds, keep=args.keep)
    summary = {key: {"median": statistics.median(row[key] for row in rows), "max": max(row[key] for row in rows)}
               for key in rows[0]}
    print(json.dumps({"runs": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
