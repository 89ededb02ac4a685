"""``ytcaption worker``: an RQ worker whose jobs share one loaded Whisper model.

It is RQ's forking ``Worker`` (a work horse per job keeps timeouts, stop and crash handling as
RQ does them) plus an engine host process that holds the model (see ``workers.engine_host``).
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
from collections.abc import Sequence

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from app.errors import EngineUnavailable
from app.jobs import QUEUE_NAMES
from app.settings import Settings
from workers import engines
from workers.engine_host import EngineHost
from workers.jobs import job_work_dir

log = logging.getLogger(__name__)


class TranscriptionWorker(Worker):
    """Checks the engine host before each job and removes the job's temp dir after it."""

    def __init__(self, queues, *, settings: Settings, engine_host: EngineHost | None = None, **kwargs) -> None:
        super().__init__(queues, **kwargs)
        self.settings = settings
        self.engine_host = engine_host

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.engine_host is not None:
            try:
                self.engine_host.ensure_running()
            except EngineUnavailable:
                # Run the job anyway: it fails with engine_unavailable and RQ records that,
                # instead of the job vanishing with a crashed worker.
                log.exception("the engine host could not be started")
        try:
            super().execute_job(job, queue)
        finally:
            # The horse removes it too, unless it was killed (stop, timeout, crash).
            shutil.rmtree(job_work_dir(self.settings.work_dir, job.id), ignore_errors=True)


def build_worker(connection: Redis, settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES,
                 engine_host: EngineHost | None = None, **kwargs) -> TranscriptionWorker:
    queues = [Queue(name, connection=connection) for name in queue_names]
    return TranscriptionWorker(queues, connection=connection, settings=settings, engine_host=engine_host, **kwargs)


def run(settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES, *, burst: bool = False,
        max_jobs: int | None = None, name: str | None = None) -> bool:
    """Start the engine host, then work on ``queue_names`` (in priority order) until stopped."""
    from app.services import connect

    connection = connect(settings)
    # Until RQ installs its own handlers, let SIGTERM unwind through ``finally`` (stopping the host).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    host = EngineHost(settings)
    try:
        host.start()
        engines.use(host.client)
        worker = build_worker(connection, settings, queue_names, engine_host=host, name=name)
        return worker.work(burst=burst, max_jobs=max_jobs, logging_level=settings.log_level)
    finally:
        engines.use(None)
        host.stop()
