"""gunicorn settings for the API (``gunicorn -c python:app.gunicorn_conf 'app:create_app()'``).

Loaded before the app is imported: it turns on prometheus_client's multiprocess mode, so HTTP
metrics add up across gunicorn's worker processes.
"""

import os
import shutil
import tempfile

_own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ytcaption-metrics-")

accesslog = "-"


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
