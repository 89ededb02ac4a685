"""gunicorn settings for the API (``gunicorn -c python:app.gunicorn_conf 'app:create_app()'``).

gevent workers: each connection is a greenlet, so a client that sends its request one byte every
few seconds (a slowloris) holds a greenlet, not a whole process as a sync worker would; measured
with ``bench/slowloris.py``. Every request of the API is short: Redis round trips, no CPU-bound
work that would hold the others up.

Loaded before the app is imported: it turns on prometheus_client's multiprocess mode, so HTTP
metrics add up across gunicorn's worker processes; makes gunicorn's own lines logfmt like every
other line of ytcaption's (one line per request, its fields as fields); and turns off gunicorn's
control socket, one path in the home directory that every gunicorn on the machine would share.
"""

import os
import shutil
import tempfile

_own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ytcaption-metrics-")

worker_class = "gevent"
#: Connections one process holds at once; beyond that a client waits for ``accept``.
worker_connections = 1000
#: Seconds an idle kept-alive connection stays open, and, with gevent workers, the time a client has
#: to send a request's line and headers (gunicorn's ``timeout_ctx``): a slower one is disconnected.
keepalive = 5
accesslog = "-"
control_socket_disable = True
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"logfmt": {"()": "app.core.logs.LogfmtFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "logfmt", "stream": "ext://sys.stderr"}},
    "loggers": {name: {"level": "INFO", "handlers": ["stderr"], "propagate": False}
                for name in ("gunicorn.error", "gunicorn.access")},
    "root": {"level": "INFO", "handlers": []},  # the app adds its own (app.core.logs.configure_logging)
}


def pre_request(worker, req):
    """Let the other connections' greenlets run before each request. A keep-alive client whose next
    request is already there never makes its greenlet wait, so it never yields: with 8 such clients
    on one process, half the requests took 0.5 ms and the slowest 1 % 480 ms (14 ms with this)."""
    import gevent

    gevent.sleep(0)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
