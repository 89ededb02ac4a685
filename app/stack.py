"""``ytcaption up``: the whole stack in the foreground, stopped cleanly by Ctrl-C.

Starts an embedded Redis (when ``REDIS_URL`` is unset), the API under gunicorn, one worker
on all queues and the scheduler. Children run in their own sessions so that Ctrl-C reaches only this process,
which then stops them in order: API and worker first (the worker finishes its current job),
Redis last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from app.core.processes import terminate
from app.core.redis_server import RedisServer
from app.core.settings import Settings

log = logging.getLogger("ytcaption.up")

#: Seconds the API and worker get to finish after Ctrl-C before they are killed.
GRACE_SECONDS = 60


def commands(settings: Settings, host: str) -> dict[str, list[str]]:
    """The processes of the stack (the Procfile's ``web``, ``worker`` and ``scheduler``)."""
    return {
        "web": [sys.executable, "-m", "gunicorn", "--config", "python:app.gunicorn_conf",
                "--bind", f"{host}:{settings.port}", "--workers", str(settings.web_concurrency), "app:create_app()"],
        "worker": [sys.executable, "-m", "app", "worker"],
        "scheduler": [sys.executable, "-m", "app", "scheduler"],
    }


def run_stack(settings: Settings, host: str = "127.0.0.1") -> int:
    env = dict(os.environ)
    redis = None
    if settings.redis_url is None:
        redis = RedisServer(settings.data_dir.resolve(), unix_socket=settings.embedded_redis_socket)
        redis.start()
        env["REDIS_URL"] = redis.url
        log.info("embedded Redis %s (append-only file in %s)", redis.url, redis.directory)

    stop_requested = []

    def request_stop(signum, frame):
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    processes: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        for name, command in commands(settings, host).items():
            processes[name] = subprocess.Popen(command, env=env, start_new_session=True)
            log.info("started %s (pid %s)", name, processes[name].pid)
        log.info("ytcaption is up: API on http://%s:%s (Ctrl-C stops everything)", host, settings.port)
        while not stop_requested:
            exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
            if exited:
                log.error("%s exited (%s); stopping the stack", ", ".join(exited), exited)
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        log.info("stopping %s", ", ".join(processes))
        terminate(processes.values(), GRACE_SECONDS)
        if redis is not None:
            redis.stop()
            log.info("embedded Redis stopped")
    return exit_code
