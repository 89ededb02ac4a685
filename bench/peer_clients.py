"""How section 9 sends work: ytcaption as a client uses it, the engine alone, many clients at once,
and a probe that times a cheap route while a transcription runs.

Every system offers ``transcribe(clip) -> Result`` (the peer's is in ``bench.peer_server``), so
the section measures them all with the same code.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.core.settings import Settings
from bench.engine import Clip
from bench.harness import BenchError, Harness, http_json
from bench.peer_server import Result, get

#: How often a ytcaption client asks for its job's status (the API has no push channel).
POLL_INTERVAL = 0.25
PROBE_INTERVAL = 0.5


class System(Protocol):
    label: str

    def transcribe(self, clip: Clip) -> Result: ...


class Ytcaption:
    """ytcaption as its clients use it: submit the clip's URL, poll the status, fetch the transcript.

    The seconds are the client's, from the submit to the status that says ``completed``: they
    include the download, the queue and up to one poll interval, as a client waits them.
    """

    probe_path = "/healthz"

    def __init__(self, h: Harness, label: str) -> None:
        self.h, self.label = h, label
        self.url, self.key = h.api(), h.api_key()

    def transcribe(self, clip: Clip) -> Result:
        started = time.perf_counter()
        code, body = http_json("POST", self.url + "/api/v1/transcribe/async/submit", self.key,
                               {"youtube_url": self.h.media.url(clip.name)})
        if code != 202:
            raise BenchError(f"submit of {clip.name} answered {code}: {body}")
        while True:
            time.sleep(POLL_INTERVAL)
            code, status = http_json("GET", self.url + body["status_url"], self.key)
            if code == 200 and status["status"] == "completed":
                break
            if code != 200 or status["status"] in ("failed", "cancelled") or status.get("last_error"):
                raise BenchError(f"job for {clip.name} did not complete: {status}")
        ended = time.perf_counter()
        code, transcript = http_json("GET", f"{self.url}/api/v1/transcriptions/{status['result']['transcription_id']}",
                                     self.key)
        if code != 200:
            raise BenchError(f"transcript of {clip.name} answered {code}: {transcript}")
        return Result(ended - started, ended, transcript["text"],
                      job_seconds=(_moment(status["ended_at"]) - _moment(status["created_at"])).total_seconds(),
                      stages=status["result"]["timings"])


class EngineAlone:
    """``FasterWhisperEngine`` in this process with ytcaption's default settings, as section 1 runs it."""

    label = "engine alone"

    def __init__(self, settings: Settings, warm_up: Clip) -> None:
        from workers.engines import FasterWhisperEngine

        self.engine = FasterWhisperEngine(settings)
        self.model = settings.default_model_name
        self.engine.load(self.model)
        self.transcribe(warm_up)

    def transcribe(self, clip: Clip) -> Result:
        started = time.perf_counter()
        transcript = self.engine.transcribe(str(clip.path), language=None, model=self.model)
        ended = time.perf_counter()
        return Result(ended - started, ended, transcript.text)


@dataclass(frozen=True)
class Load:
    """What many clients got: audio seconds per wall second and each request's result."""

    audio_per_second: float
    results: list[Result]

    def latency(self, percent: int) -> float:
        """The ``percent``-th percentile of the requests' seconds (linear between the two nearest)."""
        seconds = [result.seconds for result in self.results]
        return statistics.quantiles(seconds, n=100, method="inclusive")[percent - 1]


def concurrent_load(system: System, clip: Clip, duration: float, clients: int, requests_each: int) -> Load:
    """``clients`` threads, each sending ``clip`` ``requests_each`` times in a row; all start at once."""

    def client() -> list[Result]:
        return [system.transcribe(clip) for _ in range(requests_each)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [result for batch in pool.map(lambda _: client(), range(clients)) for result in batch]
    wall = max(result.ended for result in results) - started
    return Load(duration * len(results) / wall, results)


def warm_up(system: System, clip: Clip, count: int) -> None:
    """``count`` requests at once: each worker's first job pays for its imports, not to be timed."""
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda _: system.transcribe(clip), range(count)))


class Probe:
    """GETs ``url`` every 0.5 s in a thread (one at a time) and keeps each answer's seconds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                get(self.url)
            except OSError:  # no answer within get()'s timeout: kept as that long a wait
                pass
            took = time.perf_counter() - started
            self.seconds.append(took)
            self._stop.wait(max(0.0, PROBE_INTERVAL - took))


def _moment(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
