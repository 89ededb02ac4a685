"""What every section shares: a temp dir, a private Redis, child processes with log files,
a loopback media server, and the ytcaption stack (API under gunicorn, ``ytcaption worker``).

Everything started here is stopped by ``Harness.close()``, which ``with Harness() as h`` calls
even when a section fails.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker

from app.core.processes import terminate
from app.core.redis_server import RedisServer, free_port
from app.core.settings import Settings
from app.core.users import UserStore
from app.stack import commands

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "media"
#: A URL the API accepts without DNS (YouTube's own host), for submits that are never run.
YOUTUBE_URL = "https://www.youtube.com/watch?v=jNQXAC9IVRw"


class BenchError(RuntimeError):
    """Something the benchmark needs did not happen (a process died, a job failed, a timeout)."""


class Harness:
    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ytcaption-bench-"))
        self.keep = keep
        self.children: dict[str, subprocess.Popen] = {}
        self.redis_server: RedisServer | None = None
        self.media: MediaServer | None = None
        self._redis: Redis | None = None
        self._api_url: str | None = None
        self._api_key: str | None = None
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        """A progress line on stderr, with the seconds since the start."""
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", file=sys.stderr, flush=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        terminate(list(self.children.values())[::-1], 15)
        self.children.clear()
        if self.media is not None:
            self.media.close()
        if self._redis is not None:
            self._redis.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- Redis and the media server ----------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_server = RedisServer(self.dir / "redis", port=free_port(), persistent=False)
        self.redis_server.start()

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.redis_url)
        return self._redis

    def serve_media(self, directory: Path) -> MediaServer:
        self.media = MediaServer(directory)
        return self.media

    # --- child processes ------------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of every child: this Redis, private dirs, the loopback media host."""
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            REDIS_URL=self.redis_url,
            DATA_DIR=str(self.dir / "data"),
            WORK_DIR=str(self.dir / "work"),
            ALLOWED_URL_HOSTS="127.0.0.1:*",
            # The benchmark user must never be throttled (its quota is raised in api_key()).
            RATE_LIMIT_ENTERPRISE=str(10**9),
            BENCH_REDIS_URL=self.redis_url,
        )
        env.update(overrides)
        return env

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``command`` in its own session, its output in ``<name>.log`` in the temp dir."""
        if name in self.children and self.children[name].poll() is None:
            raise BenchError(f"{name} is already running")
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen(command, env=env or self.env(), cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.children[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, *names: str, grace: float = 15) -> None:
        terminate([self.children.pop(name, None) for name in names], grace)

    def stop_matching(self, prefix: str) -> None:
        self.stop(*[name for name in self.children if name.startswith(prefix)])

    def check_alive(self, *names: str) -> None:
        for name in names:
            process = self.children.get(name)
            if process is not None and process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}; its log ends:\n{self.log_tail(name)}")

    def wait_until(self, predicate: Callable[[], Any], what: str, timeout: float = 60,
                   watch: Iterable[str] = (), interval: float = 0.05) -> Any:
        """Poll ``predicate`` until it is truthy; fail if a watched child dies or time runs out."""
        watch = tuple(watch)
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            self.check_alive(*watch)
            if time.monotonic() > deadline:
                logs = "".join(f"\n--- {name}.log:\n{self.log_tail(name)}" for name in watch)
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")
            time.sleep(interval)

    # --- the ytcaption stack ---------------------------------------------------------------------

    def start_gunicorn(self, name: str, command: list[str], ready_path: str, port: int,
                       env: dict[str, str] | None = None) -> str:
        """Start a gunicorn ``command`` bound to ``port``; return its base URL once it answers."""
        self.spawn(name, command, env)
        base = f"http://127.0.0.1:{port}"
        self.wait_until(lambda: _answers(base + ready_path), f"{name} to answer", timeout=60, watch=[name])
        return base

    def api(self) -> str:
        """The ytcaption API under gunicorn (2 workers, app.gunicorn_conf), started on first use."""
        if self._api_url is None or self.children.get("api") is None:
            port = free_port()
            env = self.env(PORT=str(port), WEB_CONCURRENCY="2")
            web = commands(Settings.load({"PORT": port, "WEB_CONCURRENCY": 2}), "127.0.0.1")["web"]
            self._api_url = self.start_gunicorn("api", web, "/healthz", port, env)
        return self._api_url

    def api_key(self) -> str:
        """An enterprise user's key (express queue) with a quota no benchmark uses up."""
        if self._api_key is None:
            _, self._api_key = UserStore(self.redis).create(f"bench-{uuid.uuid4().hex[:8]}@example.com",
                                                            "enterprise", quota=10**9)
        return self._api_key

    def start_workers(self, prefix: str, count: int, args: list[str], queue: str,
                      env: dict[str, str] | None = None, expect: int | None = None,
                      timeout: float = 120) -> list[str]:
        """Start ``count`` × ``ytcaption worker ARGS`` and wait until ``expect`` (default ``count``)
        RQ workers listen on ``queue``: then each engine host has loaded its model."""
        env = env or self.env()
        base = commands(Settings.load(), "127.0.0.1")["worker"]  # the worker takes its settings from env
        names = [f"{prefix}-{index}" for index in range(count)]
        for name in names:
            self.spawn(name, [*base, *args], env)
        self.wait_for_rq_workers(queue, expect or count, names, timeout)
        return names

    def wait_for_rq_workers(self, queue: str, count: int, watch: list[str], timeout: float = 120) -> None:
        q = Queue(queue, connection=self.redis)
        self.wait_until(lambda: Worker.count(connection=self.redis, queue=q) >= count,
                        f"{count} worker(s) on queue {queue!r}", timeout=timeout, watch=watch)

    def empty_queues(self, *names: str) -> None:
        for name in names:
            Queue(name, connection=self.redis).empty()


class MediaServer:
    """Serves a directory on loopback, as the tests' ``media_server`` does, for yt-dlp to fetch."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str, **query) -> str:
        """The file's URL; a query (ignored by the server) makes another URL of the same file."""
        suffix = "?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else ""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}{suffix}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # yt-dlp's generic extractor reads a media file's headers, then hangs up: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def http_json(method: str, url: str, key: str | None = None, body: dict | None = None,
              timeout: float = 10, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One JSON request; returns the status and the decoded body (error statuses included)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def process_tree_memory(pid: int) -> dict[str, tuple[float, float]]:
    """RSS and PSS (MiB) of a process and each of its descendants, by ``pid command``.

    PSS shares each page among the processes that map it, so it does not count twice what a
    forked child shares with its parent, as a sum of RSS does.
    """
    import psutil

    root = psutil.Process(pid)
    found = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            command = " ".join(part.rsplit("/", 1)[-1] for part in process.cmdline()[:4])
            memory = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        found[f"{process.pid} {command}"] = (memory.rss / 2**20, memory.pss / 2**20)
    return found


def versions() -> dict[str, str]:
    """Versions of the pieces measured, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("ytcaption", "faster-whisper", "ctranslate2", "av", "flask", "gunicorn", "rq", "redis",
                    "celery", "yt-dlp"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def python_version() -> str:
    return sys.version.split()[0]
