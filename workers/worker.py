"""``ytcaption worker``: RQ's forking worker, plus an engine host that holds the Whisper model.

A work horse is forked per job, so RQ's timeout, stop and crash handling apply as RQ does them;
the model lives in one engine host process per worker (see ``workers.engine_host`` for why).
What ytcaption adds goes through RQ's public surface wherever RQ offers one:

- job callbacks (``workers.callbacks``) count ended jobs for ``/metrics``, refund quota units and
  remove temporary files; ``work_horse_killed_handler`` says why a horse died;
- ``HerokuWorker`` gives the shutdown: on SIGTERM (or Ctrl-C) the running job has
  ``WORKER_SHUTDOWN_GRACE`` s (its ``imminent_shutdown_delay``) to finish, then RQ raises
  ``ShutDownImminentException`` in it and the job hands itself back (``workers.jobs``);
- heartbeats every ``MONITOR_INTERVAL`` s and maintenance every ``MAINTENANCE_INTERVAL`` s are
  constructor arguments;
- ``queue_class`` is ``workers.fetch.FetchingQueue``: jobs are fetched in priority order into the
  worker's fetched list, where they are found again if the worker dies (``app.core.reliability``);
- every worker serves the ``webhooks`` queue before the queues it was given: the worker that
  has just ended a job delivers its webhook next (``workers.webhooks``, seconds at most), and
  RQ's scheduler in the worker (``with_scheduler``) puts the deliveries' retries back when due.

``TranscriptionWorker`` overrides twelve RQ methods; each says why. They are the only ones, and
``rq`` is pinned to the minor version the suite runs against (``pyproject.toml``).
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, get_current_job, worker_registration
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.worker import HerokuWorker

from app.core import reliability
from app.core.errors import EngineUnavailable
from app.core.jobs import QUEUE_NAMES
from app.core.reliability import claim, release, taken_from
from app.core.settings import Settings
from app.core.webhooks import WEBHOOK_QUEUE
from workers import context, ytdlp
from workers.callbacks import horse_killed
from workers.cpu_share import CpuPool
from workers.doctor import log_summary
from workers.download import warm_up
from workers.engine_host import EngineHost
from workers.fetch import FetchingQueue

log = logging.getLogger(__name__)

#: Seconds between the worker's checks on a running horse (and its heartbeats meanwhile).
MONITOR_INTERVAL = 5
#: A job whose worker stopped beating for this long past an interval is found abandoned.
HEARTBEAT_SLACK = 10
#: Seconds between maintenance passes (abandoned jobs, expired registry entries).
MAINTENANCE_INTERVAL = 10
#: Seconds after a stop request by which an idle worker must have left RQ's loop (more than the
#: second within which RQ ignores a repeated signal).
STOP_CHECK = 2.0
#: The signal by which a worker tells its horse to hand its job back now (a second stop request).
#: Not HerokuWorker's SIGRTMIN again: two SIGRTMIN that reach a horse before it ran its handler for
#: the first are taken as one, and the job would keep its whole grace period.
HAND_BACK_NOW = signal.SIGRTMIN + 1
#: Seconds a stopping worker waits for RQ's scheduler process before it kills it (honcho kills a
#: process that has not exited 5 s after its SIGTERM; Heroku after 30 s).
SCHEDULER_STOP_TIMEOUT = 3.0


class TranscriptionWorker(HerokuWorker):
    """RQ's ``HerokuWorker`` (graceful shutdown into the job) with an engine host and short heartbeats."""

    def __init__(self, queues, *, settings: Settings, engine_host: EngineHost | None = None, **kwargs) -> None:
        kwargs.setdefault("job_monitoring_interval", MONITOR_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        # An idle worker blocks on its queues for worker_ttl - 15 s and runs maintenance only
        # between two waits: keep the wait as short as the maintenance interval.
        kwargs.setdefault("worker_ttl", MAINTENANCE_INTERVAL + 15)
        kwargs.setdefault("work_horse_killed_handler", horse_killed)
        super().__init__(queues, **kwargs)
        self.settings = settings
        self.engine_host = engine_host
        self.imminent_shutdown_delay = settings.worker_shutdown_grace
        #: Set once a stop was asked for (SIGTERM, Ctrl-C, ``rq``'s shutdown command).
        self.stop_requested = False
        #: Set once a second stop signal told the running job to hand itself back at once.
        self.handing_back = False
        #: In a work horse: set once ShutDownImminentException was raised in the job.
        self.hand_back_raised = False
        #: Set once RQ's work loop was left (its teardown began).
        self.left_work_loop = False
        #: The worker's own process (RQ's scheduler process watches it).
        self.process_id = os.getpid()
        multiprocessing.util.register_after_fork(self, _stop_with_worker)

    # Why: RQ has no hook around a job in the worker. Before the job: claim it on the fetched list
    # (a worker that was frozen may find it given to another), and restart the engine host if it
    # died; after it: take it off the fetched list, stop the engine host if the job left a
    # transcription running on it (cancelled, timed out, handed back, its horse killed: the host
    # would go on for nobody, and the next job would wait for it) and start a new one, or start a
    # new one if this worker's share of the cores changed (``workers.cpu_share``), or recycle the
    # host once worn. And before forking the horse, find the yt-dlp extractor of the job's URL,
    # which costs a horse ten times more (``workers.ytdlp.choose_extractor``). A webhook delivery
    # needs none of the engine host's care, nor counts as one of its jobs.
    def execute_job(self, job: Job, queue: Queue) -> None:
        if not claim(self.connection, self.name, job.id):
            self.log.warning("Worker %s: job %s was put back on its queue while this worker was not answering; "
                             "not running it here", self.name, job.id)
            return
        if queue.name == WEBHOOK_QUEUE:
            try:
                super().execute_job(job, queue)
            finally:
                release(self.connection, self.name, job.id)
            return
        if self.engine_host is not None:
            try:
                self.engine_host.ensure_running()
            except EngineUnavailable:
                # Run the job anyway: it fails with engine_unavailable (and is retried) instead
                # of vanishing with a crashed worker.
                log.exception("the engine host could not be started")
        try:
            url = job.kwargs.get("url")
        except DeserializationError:  # RQ fails such a job in the horse
            url = None
        ytdlp.choose_extractor(url if isinstance(url, str) else None)
        try:
            super().execute_job(job, queue)
        finally:
            release(self.connection, self.name, job.id)  # if the horse died before it started the job
            if self.engine_host is not None:
                if self.engine_host.stop_if_abandoned():
                    self._restart_engine_host()
                elif not self._follow_cpu_share():
                    self.engine_host.recycle_if_worn(self.settings.engine_max_jobs,
                                                     self.settings.engine_max_memory_mb)

    def _restart_engine_host(self) -> None:
        """Start the engine host again now, so that the next job does not wait for its model; not
        when the worker is stopping (it would only be stopped again)."""
        if self.stop_requested:
            return
        try:
            self.engine_host.start()
        except EngineUnavailable:
            log.exception("the engine host could not be started; trying again before the next job")

    def _follow_cpu_share(self) -> bool:
        """Start a new engine host now if this worker's share of the cores changed (not when stopping)."""
        if self.engine_host is None or self.stop_requested:
            return False
        try:
            return self.engine_host.follow_cpu_share()
        except EngineUnavailable:
            log.exception("the engine host could not be started; trying again before the next job")
            return True

    # Why: the job leaves the fetched list once RQ recorded its start (its started registry has it
    # from then on), as RQ takes a job off its own intermediate queue at this point.
    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        release(self.connection, self.name, job.id)

    # Why: a job extends its own timeout once it knows the video's duration (``extend_timeout``);
    # RQ's monitor would otherwise kill the horse at the timeout it read when the job started. And
    # a worker that was frozen must not keep alive, by its heartbeats, a job given to another
    # worker meanwhile (RQ would later find it "abandoned" and run it a third time): it drops its
    # execution instead, and the horse walks away from the job (``workers.jobs.ensure_owned``).
    # And the worker's registration in its CPU pool lives on through a long job.
    def maintain_heartbeats(self, job: Job, execution) -> None:
        if self.engine_host is not None and self.engine_host.pool is not None:
            self.engine_host.pool.renew()
        if taken_from(self.connection, job, self.name):
            self.log.warning("Worker %s: job %s was given to another worker while this one was not answering; "
                             "leaving it", self.name, job.id)
            with self.connection.pipeline() as pipe:
                execution.delete(job=job, pipeline=pipe)
                pipe.execute()
            return
        if timeout := self.connection.hget(job.key, "timeout"):
            job.timeout = int(timeout)
        super().maintain_heartbeats(job, execution)

    # Why: RQ lets a job's heartbeat outlive its worker by 60 s; with 10 s a job whose worker
    # died (a lost machine) is found abandoned, and retried, within about 25 s.
    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_monitoring_interval + HEARTBEAT_SLACK

    # Why: when the horse of a worker that was frozen walks away from a job given to another worker,
    # or dies, RQ's monitor fails the job; that must not touch the run that owns the job now.
    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string="",
                           execution=None) -> None:
        if taken_from(self.connection, job, self.name):
            self.log.warning("Worker %s: job %s belongs to another run now; not failing it", self.name, job.id)
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    # Why: besides RQ's own maintenance (abandoned jobs, expired entries), recover the fetched jobs
    # of workers that are gone and requeue orphans (``app.core.reliability``), at the same pace.
    # The sweep looks at every queue, not only this worker's: a job waiting in a queue this worker
    # does not serve is not an orphan.
    # And a worker whose registration was lost (a failover to a replica that never had it) registers
    # again: RQ registers a worker only when it starts, and health checks look for it. Last, an idle
    # worker follows its share of the cores (workers that came or went since its last job).
    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        reliability.maintain(self.connection, QUEUE_NAMES, self.maintenance_interval)
        self._follow_cpu_share()
        if not self.connection.sismember(self.redis_workers_keys, self.key):
            self.log.warning("Worker %s: its registration was lost (a Redis failover?); registering again", self.name)
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                pipe.expire(self.key, self.worker_ttl)
                worker_registration.register(self, pipe)
                pipe.execute()

    # Why: ``run`` must tell a requested stop from RQ's loop quitting on a Redis error; and the stop
    # of an idle worker must not be lost. RQ stops it by raising StopRequested from its signal
    # handler, and a log call under way when the signal lands swallows that exception (logging
    # catches whatever its handlers raise): if the worker is still in RQ's loop a moment later, it
    # is stopped again, the cold way (RQ raises SystemExit, which logging lets through).
    def handle_warm_shutdown_request(self) -> None:
        self.stop_requested = True
        if not self.horse_pid:
            check = threading.Timer(STOP_CHECK, self._stop_again_if_still_working)
            check.daemon = True
            check.start()
        super().handle_warm_shutdown_request()

    def _stop_again_if_still_working(self) -> None:
        if not self.left_work_loop:
            self.log.warning("Worker %s: the stop request was lost in RQ's loop; stopping again", self.name)
            os.kill(os.getpid(), signal.SIGTERM)

    # Why: once RQ left its loop the stop request was not lost, and the check above must not stop
    # the worker again: its SystemExit, raised while the worker waits for its scheduler process,
    # would skip the worker's unregistering.
    def teardown(self) -> None:
        self.left_work_loop = True
        super().teardown()

    # Why: RQ stops its scheduler process with one SIGTERM and then waits for it without limit. A
    # signal that reaches a forked process before it has run is dropped (CPython clears pending
    # signals in the child after ``fork``), so a worker stopped just as it started waited forever.
    # The signal is sent again until the scheduler exits; after SCHEDULER_STOP_TIMEOUT it is killed
    # (its scheduler locks expire on their own, and another worker's scheduler takes them).
    def stop_scheduler(self) -> None:
        process = self.scheduler._process
        if not process or not process.pid:
            return
        deadline = time.monotonic() + SCHEDULER_STOP_TIMEOUT
        while process.is_alive() and time.monotonic() < deadline:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except OSError:
                break
            process.join(0.25)
        if process.is_alive():
            self.log.warning("Worker %s: the scheduler process %s did not stop in %.0f s; killing it",
                             self.name, process.pid, SCHEDULER_STOP_TIMEOUT)
            process.kill()
        process.join()

    # Why: RQ's cold shutdown (a second SIGTERM or Ctrl-C) kills the horse and leaves its job to the
    # abandoned-job cleanup, which spends one of the job's attempts. Instead the horse is told to
    # raise in the job at once (``HAND_BACK_NOW``): the job hands itself back now and the worker
    # exits as after a warm shutdown. A third signal is RQ's cold shutdown.
    def request_force_stop(self, signum, frame) -> None:
        if self.horse_pid and not self.handing_back:
            self.handing_back = True
            self.log.warning("Worker %s: handing the running job back now", self.name)
            self.kill_horse(sig=HAND_BACK_NOW)
            return
        super().request_force_stop(signum, frame)

    # Why (in the horse): the worker's second stop request comes as a signal of its own, which raises
    # in the job at once (``HerokuWorker`` handles SIGRTMIN only, the first request).
    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        signal.signal(HAND_BACK_NOW, self.request_force_stop_sigrtmin)

    # Why (in the horse): ``HerokuWorker`` raises ShutDownImminentException wherever the horse is, as
    # often as it is signalled (the end of the grace period, the second stop request). Raised again
    # while the job hands itself back, or once the job's function has returned, it fails the job in
    # RQ's bookkeeping instead: an attempt spent and a retry scheduled (besides the hand back, if
    # that was recorded). So it is raised once, and only while the job's function runs; a request
    # that comes before the function starts or after it returned is ignored (the job runs or ends).
    def request_force_stop_sigrtmin(self, signum, frame) -> None:
        if self.hand_back_raised or get_current_job() is None:
            self.log.info("Worker %s: the job is not running its code or is already handing itself back; "
                          "signal %s ignored", self.name, signum)
            return
        self.hand_back_raised = True
        super().request_force_stop_sigrtmin(signum, frame)


def _stop_with_worker(worker: TranscriptionWorker) -> None:
    """In RQ's scheduler process (forked by ``multiprocessing``; work horses are not): stop once the
    worker is gone. RQ stops its scheduler only from the worker's teardown, so a worker killed with
    SIGKILL (the OOM killer, a supervisor's last resort) left it running for good, old code and all,
    holding its queues' scheduler locks. SIGTERM stops it as the worker would (locks released)."""
    def watch() -> None:
        while os.getppid() == worker.process_id:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


def build_worker(connection: Redis, settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES,
                 engine_host: EngineHost | None = None, name: str | None = None, **kwargs) -> TranscriptionWorker:
    """A worker on the ``webhooks`` queue, then on ``queue_names`` in priority order."""
    name = name or uuid.uuid4().hex
    queue_names = [WEBHOOK_QUEUE, *(queue for queue in queue_names if queue != WEBHOOK_QUEUE)]
    queues = [FetchingQueue(queue, connection=connection, fetcher=name) for queue in queue_names]
    return TranscriptionWorker(queues, connection=connection, settings=settings, engine_host=engine_host,
                               name=name, queue_class=FetchingQueue, **kwargs)


def run(settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES, *, burst: bool = False,
        max_jobs: int | None = None, name: str | None = None) -> None:
    """Start the engine host, then work on ``queue_names`` (in priority order) until stopped.

    RQ's work loop quits on some Redis errors (and its clean-up then raises another while Redis
    is still down: a Sentinel failover, a restart); this loop starts it again until the worker
    is told to stop.
    """
    from app.core.services import connect

    ytdlp.check(settings)  # before anything starts: a wrong setting stops the worker with a sentence
    connection = connect(settings)
    stop_signals: list[int] = []

    def stop_soon(signum, frame):
        """SIGTERM or Ctrl-C while RQ's loop does not handle signals (starting, or restarting).

        Nothing is raised here (an exception from a signal handler can land anywhere, even in a
        fork handler that ignores it): the signal is noted, and sent again once RQ's own handler
        is in place, so RQ stops as after any stop request.
        """
        stop_signals.append(signum)
        threading.Thread(target=_send_again_to_rq, args=(signum, stop_soon), daemon=True).start()

    signal.signal(signal.SIGTERM, stop_soon)
    signal.signal(signal.SIGINT, stop_soon)
    # The pool knows this process by an id of its own: each start of RQ's work loop is a worker of
    # another name (a persistent Redis back from an outage still holds the previous one's
    # registration, and RQ refuses to register a worker under a name that is alive there).
    pool = CpuPool(connection, name or uuid.uuid4().hex)
    pool.workers()  # registered first: workers started together count each other before loading a model
    host = EngineHost(settings, pool=pool)
    try:
        warm_up(settings)
        host.start()
        log_summary(settings)
        context.use(settings, host.client)
        pause = 1.0
        while not stop_signals:
            worker = None
            started = time.monotonic()
            try:
                worker = build_worker(connection, settings, queue_names, engine_host=host, name=name)
                worker.work(burst=burst, max_jobs=max_jobs, logging_level=settings.log_level, with_scheduler=True)
            except (RedisConnectionError, RedisTimeoutError) as error:
                if burst or max_jobs or (worker is not None and worker.stop_requested):
                    raise
                log.warning("Redis is unreachable: %s", error)
            finally:
                if worker is not None:
                    worker.left_work_loop = True
            if burst or max_jobs or (worker is not None and worker.stop_requested):
                return
            signal.signal(signal.SIGTERM, stop_soon)
            signal.signal(signal.SIGINT, stop_soon)
            pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
            log.warning("the work loop stopped (Redis unreachable?); starting it again in %.0f s", pause)
            time.sleep(pause)
    finally:
        context.use(None)
        host.stop()
        pool.leave()


def _send_again_to_rq(signum: int, ours) -> None:
    while signal.getsignal(signum) is ours:
        time.sleep(0.01)
    os.kill(os.getpid(), signum)
