"""HTTP load: POST the same JSON body over and over from a fixed number of connections.

``wrk`` (Debian's package) when it is installed: it is written in C and costs the 2-core machine
little. Otherwise a Python generator with one thread per connection, much heavier itself, so
its figures are lower bounds; the report names the tool used.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness import BenchError

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def describe_tool() -> str:
    if tool() == "python":
        return "Python threads (wrk not installed: figures are lower bounds)"
    version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()
    return f"wrk {version[1] if len(version) > 1 else ''} (1 thread)".replace("  ", " ")


def post_load(url: str, body: dict, headers: dict[str, str], seconds: float, connections: int,
              workdir: Path) -> LoadResult:
    """Keep ``connections`` POSTs of ``body`` to ``url`` in flight for ``seconds``."""
    if tool() == "wrk":
        return _wrk(url, body, headers, seconds, connections, workdir)
    return _python(url, body, headers, seconds, connections)


def _wrk(url, body, headers, seconds, connections, workdir: Path) -> LoadResult:
    script = workdir / "post.lua"
    script.write_text(_WRK_SCRIPT.format(
        body=json.dumps(body),
        headers="\n".join(f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in headers.items())))
    duration = max(1, round(seconds))
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(script),
                           url], capture_output=True, text=True, timeout=duration + 30)
    found = re.search(r"^BENCH (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    figures = json.loads(found.group(1))
    return LoadResult(figures["requests"], figures["duration_us"] / 1e6, figures["errors"],
                      figures["p50_us"] / 1000, figures["p99_us"] / 1000)


def _python(url, body, headers, seconds, connections) -> LoadResult:
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **headers}
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    started = time.perf_counter()
    stop_at = started + seconds

    def client() -> None:
        mine, failed = [], 0
        while (begin := time.perf_counter()) < stop_at:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            try:
                connection.request("POST", parts.path, body=payload, headers=all_headers)
                response = connection.getresponse()
                response.read()
                failed += not 200 <= response.status < 400
            except OSError:
                failed += 1
            finally:
                connection.close()
            mine.append(time.perf_counter() - begin)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return LoadResult(len(latencies), elapsed, errors[0], cuts[49] * 1000, cuts[98] * 1000)
