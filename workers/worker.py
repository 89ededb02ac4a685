"""``ytcaption worker``: an RQ worker whose jobs share one loaded Whisper model.

It is RQ's forking ``Worker`` (a work horse per job keeps timeouts, stop and crash handling as
RQ does them) plus an engine host process that holds the model (see ``workers.engine_host``),
and these reliability settings:

- heartbeats every ``MONITOR_INTERVAL`` s that expire ``HEARTBEAT_SLACK`` s later, and a
  maintenance pass every ``MAINTENANCE_INTERVAL`` s, so that the job of a worker that died as a
  whole is found abandoned (and retried by RQ) within about 25 s instead of RQ's 10+ minutes;
- on SIGTERM the current job gets ``WORKER_SHUTDOWN_GRACE`` s to finish; after that its horse
  is killed and the job is put back at the front of its queue, not counted as a failed attempt;
- the engine host is restarted after ``ENGINE_MAX_JOBS`` jobs or above ``ENGINE_MAX_MEMORY_MB``.

``TranscriptionWorkerMixin`` holds what the other mode, ``ytcaption worker --no-fork``
(``workers.pool``), shares with this one.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence

from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.utils import now

from app.errors import EngineUnavailable
from app.jobs import QUEUE_NAMES
from app.quota import refund
from app.stats import record_completed, task_name
from app.settings import Settings
from workers import engines
from workers.download import warm_up
from workers.engine_host import EngineHost
from workers.jobs import job_work_dir

log = logging.getLogger(__name__)

MONITOR_INTERVAL = 5
HEARTBEAT_SLACK = 10
MAINTENANCE_INTERVAL = 10


class TranscriptionWorkerMixin:
    """What both worker modes add to RQ: heartbeat settings, metrics, refunds, temp-dir cleanup.

    Mixed into RQ's forking ``Worker`` (``TranscriptionWorker``, below) and its ``SimpleWorker``
    (``workers.pool.InProcessWorker``, the ``--no-fork`` mode).
    """

    def __init__(self, queues, *, settings: Settings, **kwargs) -> None:
        kwargs.setdefault("job_monitoring_interval", MONITOR_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        # An idle worker blocks on the queues for worker_ttl - 15 s and runs maintenance only
        # between two waits: keep the wait as short as the maintenance interval.
        kwargs.setdefault("worker_ttl", MAINTENANCE_INTERVAL + 15)
        super().__init__(queues, **kwargs)
        self.settings = settings
        self._hand_back_job_id: str | None = None
        self._suspension_checked = 0.0
        self._succeeded: tuple[Job, Queue] | None = None

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_monitoring_interval + HEARTBEAT_SLACK

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's worker heartbeat in one round trip, and at most once a second when called plainly.

        RQ sends its three commands one by one and calls it three times per job (nine round trips
        a job, most of a no-op job's cost); the worker's key lives ``worker_ttl + 60`` s anyway.
        """
        if pipeline is not None or timeout is not None:
            return super().heartbeat(timeout, pipeline)
        if self.last_heartbeat and (now() - self.last_heartbeat).total_seconds() < 1:
            return None
        with self.connection.pipeline(transaction=False) as batch:
            super().heartbeat(timeout, batch)
            batch.execute()
        return None

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check for ``rq suspend`` (a round trip before every job), at most once a second."""
        if time.monotonic() - self._suspension_checked >= 1:
            super().check_for_suspension(burst)
            self._suspension_checked = time.monotonic()

    def maintain_heartbeats(self, job: Job, execution) -> None:
        # The job may have extended its own timeout once it learned the video's duration.
        timeout = self.connection.hget(job.key, "timeout")
        if timeout:
            job.timeout = int(timeout)
        super().maintain_heartbeats(job, execution)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string="",
                           execution=None) -> None:
        # Before the failure (or cancel) is visible: a job that shows as ended has no temp files.
        shutil.rmtree(job_work_dir(self.settings.work_dir, job.id), ignore_errors=True)
        if job.id != self._hand_back_job_id:
            stopped = self._stopped_job_id == job.id  # cancelled while running: no refund
            final = stopped or not job.should_retry
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            if final:
                cancelled = stopped or (job.meta.get("error") or {}).get("type") == "cancelled"
                record_completed(self.connection, queue.name, "cancelled" if cancelled else "failed",
                                 task_name(job.func_name), _run_time(job))
            if final and not stopped:
                refund(self.connection, job)  # failed for good: the quota unit comes back
            return
        self._hand_back_job_id = None
        self.requeue_at_front(job, queue, execution)

    def requeue_at_front(self, job: Job, queue: Queue, execution) -> None:
        """Handed back on shutdown: requeue at the front, without using up an attempt."""
        job.meta.update(stage="queued", progress=0)
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()
        job.save_meta()
        queue.enqueue_job(job, at_front=True)
        self.log.info("Worker %s: job %s is back at the front of %s", self.name, job.id, queue.name)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry, execution) -> None:
        self._succeeded = (job, queue)
        try:
            super().handle_job_success(job, queue, started_job_registry, execution)
        finally:
            self._succeeded = None

    def increment_successful_job_count(self, pipeline=None) -> None:
        super().increment_successful_job_count(pipeline)
        if self._succeeded is not None and pipeline is not None:
            # Inside RQ's transaction that records the success: the job is counted with it, for free.
            job, queue = self._succeeded
            record_completed(pipeline, queue.name, "finished", task_name(job.func_name), _run_time(job))


class TranscriptionWorker(TranscriptionWorkerMixin, Worker):
    """The default mode: RQ's forking worker, a work horse per job, the model in an engine host."""

    def __init__(self, queues, *, settings: Settings, engine_host: EngineHost | None = None, **kwargs) -> None:
        super().__init__(queues, settings=settings, **kwargs)
        self.engine_host = engine_host
        self.stop_signalled = False
        self._grace_timer: threading.Timer | None = None

    # --- one job --------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.engine_host is not None:
            try:
                self.engine_host.ensure_running()
            except EngineUnavailable:
                # Run the job anyway: it fails with engine_unavailable (and is retried) instead
                # of vanishing with a crashed worker.
                log.exception("the engine host could not be started")
        try:
            super().execute_job(job, queue)
        finally:
            self._hand_back_job_id = None
            # The horse removes it too, unless it was killed (stop, timeout, crash).
            shutil.rmtree(job_work_dir(self.settings.work_dir, job.id), ignore_errors=True)
            if self.engine_host is not None:
                self.engine_host.recycle_if_worn(self.settings.engine_max_jobs, self.settings.engine_max_memory_mb)

    def setup_work_horse_signals(self) -> None:
        # The horse ignores SIGTERM and SIGINT: some platforms (Heroku) send SIGTERM to every
        # process; the worker decides when the horse stops (grace period, then SIGKILL).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    # --- shutdown ---------------------------------------------------------------------------

    def request_stop(self, signum, frame) -> None:
        """Warm shutdown: the job may finish within the grace period, else it is handed back."""
        self.stop_signalled = True
        job_id = self._running_job_id()
        if job_id and self._grace_timer is None:
            grace = self.settings.worker_shutdown_grace
            self.log.info("Worker %s: letting job %s finish for up to %s s", self.name, job_id, grace)
            self._grace_timer = threading.Timer(grace, self._hand_back, args=(job_id,))
            self._grace_timer.daemon = True
            self._grace_timer.start()
        super().request_stop(signum, frame)

    def request_force_stop(self, signum, frame) -> None:
        """A second signal: hand the job back now, then exit."""
        execution = next(iter(self.executions.values()), None)
        if execution is not None and self.horse_pid:
            self.kill_horse()
            self.wait_for_horse()
            job = Job.fetch(execution.job_id, connection=self.connection)
            # RQ's cold shutdown exits without recording the killed horse: requeue the job here.
            self.requeue_at_front(job, Queue(job.origin, connection=self.connection), execution)
            self._horse_pid = 0
        super().request_force_stop(signum, frame)

    def _running_job_id(self) -> str | None:
        """The job a work horse is running now (from memory: this runs in signal handlers)."""
        execution = next(iter(self.executions.values()), None)
        return execution.job_id if execution is not None and self.horse_pid else None

    def _hand_back(self, job_id: str) -> None:
        if self._running_job_id() == job_id:
            self.log.warning("Worker %s: handing job %s back to its queue", self.name, job_id)
            self._hand_back_job_id = job_id
            self.kill_horse()

    def teardown(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        super().teardown()


def _run_time(job: Job) -> float | None:
    return (now() - job.started_at).total_seconds() if job.started_at else None


def build_worker(connection: Redis, settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES,
                 engine_host: EngineHost | None = None, **kwargs) -> TranscriptionWorker:
    queues = [Queue(name, connection=connection) for name in queue_names]
    return TranscriptionWorker(queues, connection=connection, settings=settings, engine_host=engine_host, **kwargs)


def run(settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES, *, burst: bool = False,
        max_jobs: int | None = None, name: str | None = None) -> None:
    """Start the engine host, then work on ``queue_names`` (in priority order) until stopped.

    RQ's work loop quits on some Redis errors; this loop starts it again (Redis may be
    restarting) until the worker is told to stop.
    """
    from app.services import connect

    connection = connect(settings)

    def stop_before_work(signum, frame):
        sys.exit(128 + signum)  # unwinds through ``finally``, which stops the engine host

    signal.signal(signal.SIGTERM, stop_before_work)
    host = EngineHost(settings)
    try:
        warm_up()
        host.start()
        engines.use(host.client)
        pause = 1.0
        while True:
            worker = build_worker(connection, settings, queue_names, engine_host=host, name=name)
            started = time.monotonic()
            worker.work(burst=burst, max_jobs=max_jobs, logging_level=settings.log_level, with_scheduler=True)
            if burst or max_jobs or worker.stop_signalled:
                return
            pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
            log.warning("the work loop stopped (Redis unreachable?); starting it again in %.0f s", pause)
            signal.signal(signal.SIGTERM, stop_before_work)
            signal.signal(signal.SIGINT, stop_before_work)
            time.sleep(pause)
    finally:
        engines.use(None)
        host.stop()
