"""The Celery side of section 4: ``bench.noop.noop`` as a Celery task, Redis as broker and backend.

The worker runs ``celery -A bench.celery_noop worker`` with ``BENCH_REDIS_URL`` set; Celery's
command line needs the app at module level (it connects to nothing until used).
"""

from __future__ import annotations

import os

from celery import Celery

from bench import noop as _noop

QUEUE = "bench-celery"

app = Celery("bench_noop")
app.conf.update(
    broker_url=os.environ.get("BENCH_REDIS_URL"),
    # Results are stored, as RQ stores every job's result.
    result_backend=os.environ.get("BENCH_REDIS_URL"),
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="bench.noop")
def noop(redis_url: str, key: str) -> None:
    _noop.noop(redis_url, key)


def configure(redis_url: str) -> Celery:
    """Point the app at ``redis_url`` (in the process that publishes)."""
    app.conf.update(broker_url=redis_url, result_backend=redis_url)
    return app
