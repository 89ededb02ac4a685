"""``ytcaption up``: the whole stack in the foreground, stopped cleanly by Ctrl-C.

Starts an embedded Redis (when neither ``REDIS_URL`` nor ``REDIS_SENTINELS`` is set), the API
under gunicorn, one worker on all queues and the scheduler, each with this process's settings. Children run in their own sessions
so that Ctrl-C reaches only this process, which then stops them: API, worker and scheduler get
SIGTERM (the worker's job may finish within ``WORKER_SHUTDOWN_GRACE``, else goes back to its
queue); a second Ctrl-C is passed on, so the worker hands its job back at once; Redis stops last.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from app.core.redis_server import RedisServer
from app.core.settings import Settings

log = logging.getLogger("ytcaption.up")

#: Seconds the processes get, beyond the worker's grace period, before they are killed.
STOP_SLACK = 10


def commands(settings: Settings, host: str) -> dict[str, list[str]]:
    """The processes of the stack (the Procfile's ``web``, ``worker`` and ``scheduler``)."""
    return {
        "web": [sys.executable, "-m", "gunicorn", "--config", "python:app.gunicorn_conf",
                "--bind", f"{host}:{settings.port}", "--workers", str(settings.web_concurrency), "app:create_app()"],
        "worker": [sys.executable, "-m", "app", "worker"],
        "scheduler": [sys.executable, "-m", "app", "scheduler"],
    }


def run_stack(settings: Settings, host: str = "127.0.0.1") -> int:
    redis = None
    if settings.redis_url is None and not settings.redis_sentinels:
        redis = RedisServer(settings.data_dir.resolve(), unix_socket=settings.embedded_redis_socket)
        redis.start()
        settings = settings.model_copy(update={"redis_url": redis.url})
        log.info("embedded Redis %s (append-only file in %s)", redis.url, redis.directory)
    env = {**os.environ, **settings.to_environ()}  # the children run with exactly these settings

    stop_signals: list[int] = []

    def request_stop(signum, frame):
        stop_signals.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    processes: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        for name, command in commands(settings, host).items():
            processes[name] = subprocess.Popen(command, env=env, start_new_session=True)
            log.info("started %s (pid %s)", name, processes[name].pid)
        log.info("ytcaption is up: API on http://%s:%s (Ctrl-C stops everything)", host, settings.port)
        while not stop_signals:
            exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
            if exited:
                log.error("%s exited (%s); stopping the stack", ", ".join(exited), exited)
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        _stop(processes, stop_signals, settings.worker_shutdown_grace + STOP_SLACK)
        if redis is not None:
            redis.stop()
            log.info("embedded Redis stopped")
    return exit_code


def _stop(processes: dict[str, subprocess.Popen], stop_signals: list[int], grace: float) -> None:
    """SIGTERM to every process; each further stop signal is passed on; SIGKILL after ``grace`` s."""
    log.info("stopping %s (Ctrl-C again: the worker hands its job back at once)", ", ".join(processes))
    seen = len(stop_signals)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in processes.values()):
        if len(stop_signals) > seen:  # Ctrl-C again
            seen = len(stop_signals)
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    for name, process in processes.items():
        if process.poll() is None:
            log.warning("%s did not stop within %.0f s; killing it", name, grace)
            process.kill()
            process.wait()
