"""Cancelling a running job frees its worker at once, with real processes: worker, engine host, model."""

import os
import subprocess
import time
from datetime import datetime, timezone

from rq.job import Job

from app.core.processes import cpu_seconds
from tests.helpers import children, start_worker, status, stop_process, submit, wait_for

#: Seconds of noise in the clip that is cancelled. Whisper finds no speech in it (as a rule: now and
#: then it makes up a few words) and the engine host sends nothing while it works through it: over a
#: minute on this 2-core machine. The worker decodes it all, VAD off: with VAD (the default) noise
#: may not be decoded at all, or be decoded in batches, in seconds.
NOISE_SECONDS = 600
#: Seconds from the cancel within which the next job must have completed: its own work (a 3 s clip)
#: and a new engine host on a busy machine, far less than transcribing the rest of the noise.
NEXT_JOB_DEADLINE = 45


def engine_host_of(worker_pid: int) -> int | None:
    """The engine host of a worker: its child that leads a session of its own."""
    return next((pid for pid in children(worker_pid) if _leads_session(pid)), None)


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def test_a_cancelled_transcription_frees_the_worker_for_the_next_job(make_client, media_server, redis):
    """A job cancelled while the engine host transcribes minutes of noise, in which Whisper finds no
    segment (so the host sends the gone horse nothing, and never notices it is gone): the next job,
    waiting behind it on the same single worker, starts and completes within seconds, not once the
    noise has been transcribed to its end."""
    noise = media_server.directory / "noise.wav"
    if not noise.exists():
        subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", str(noise),
                        "synth", str(NOISE_SECONDS), "whitenoise", "vol", "0.05"], check=True)
    client = make_client()
    _, key = client.application.extensions["ytcaption"].users.create("cancel@example.com", "pro")
    headers = {"Authorization": f"Bearer {key}"}
    worker = start_worker(redis, env={**os.environ, "WHISPER_VAD_FILTER": "false"})
    try:
        noisy = submit(client, headers, media_server.url("noise.wav")).get_json()["job_id"]
        wait_for(lambda: status(client, headers, noisy)["stage"] == "transcribing", timeout=120,
                 message="the noise to reach the engine")
        host = engine_host_of(worker.pid)
        busy_from = cpu_seconds(host)
        wait_for(lambda: cpu_seconds(host) > busy_from + 2, timeout=60, interval=0.1,
                 message="the engine host to be transcribing the noise")
        following = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]

        cancelled_at, cancelled_wall = time.monotonic(), datetime.now(timezone.utc)
        assert client.delete(f"/api/v1/transcribe/async/cancel/{noisy}", headers=headers).status_code == 202
        wait_for(lambda: status(client, headers, following)["status"] == "completed", timeout=NEXT_JOB_DEADLINE,
                 interval=0.1, message="the next job to complete")
        completed_after = time.monotonic() - cancelled_at
        started_after = (Job.fetch(following, connection=redis).started_at - cancelled_wall).total_seconds()
        host_gone = not os.path.exists(f"/proc/{host}") or host not in children(worker.pid)
    finally:
        stop_process(worker)
    result = status(client, headers, following)["result"]
    print(f"after the cancel: the next job started in {started_after:.2f} s and completed in "
          f"{completed_after:.2f} s (its transcription {result['timings']['transcribe']:.2f} s)")
    assert status(client, headers, noisy)["status"] == "cancelled"
    assert host_gone, "the engine host that transcribed the cancelled noise is still there"
