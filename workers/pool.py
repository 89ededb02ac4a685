"""``ytcaption worker --no-fork``: long-lived worker processes that run jobs in-process.

The default worker forks a work horse per job and keeps the model in an engine host. This mode
instead runs ``--processes`` worker processes, each an RQ ``SimpleWorker`` that holds the model
itself and runs its jobs without forking: no fork per job (several times the job throughput for
short jobs) and no process forked after the model was loaded, which is what CUDA requires.

A supervisor (this module's ``Pool``, the process you start) keeps the guarantees that the
forking worker gets from watching its horse:

- **crash**: a worker process that dies mid-job (killed, out of memory, a crash in native code)
  has its job failed at once as ``worker_lost`` (so it is retried with the normal backoff) and is
  started again;
- **timeout**: the process stops a job at its timeout itself (RQ's SIGALRM); if it is stuck in
  native code and does not, the supervisor kills it ``KILL_SLACK`` s later and fails the job
  with ``job_timeout``;
- **cancel**: a cancelled job is interrupted in-process (SIGUSR1 raises ``JobCancelled`` in the
  job); if it has not stopped ``STOP_GRACE`` s later, the supervisor kills its process;
- **shutdown**: on SIGTERM the supervisor lets running jobs finish for ``WORKER_SHUTDOWN_GRACE``
  s, then kills their processes and puts the jobs back at the front of their queues without
  using an attempt; a second SIGTERM or Ctrl-C does that at once;
- **recycling**: a process exits after ``ENGINE_MAX_JOBS`` jobs or above ``ENGINE_MAX_MEMORY_MB``
  (it holds the model, as the engine host does in the forking mode) and is started again.

Each worker process tells the supervisor which job it runs over a pipe (one JSON line per event:
``{"job": id, "execution": id}`` when a job starts, ``{"job": null}`` when it ends,
``{"stop": id}`` when it was asked to stop one), so the supervisor never has to guess from
Redis which job a dead process held. The supervisor also runs RQ's scheduler (retries,
``enqueue_at``), so that no process holding the model is ever forked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from rq.utils import now

from app.errors import JobCancelled
from app.jobs import QUEUE_NAMES
from app.logs import configure_logging
from app.processes import usable_cores, wear
from app.settings import Settings
from workers import engines
from workers.download import warm_up
from workers.jobs import describe_error, job_work_dir
from workers.worker import MAINTENANCE_INTERVAL, TranscriptionWorkerMixin

log = logging.getLogger("workers.pool")  # also when run as __main__

#: Seconds a cancelled job gets to stop by itself before its process is killed.
STOP_GRACE = 5.0
#: Seconds past a job's timeout before the supervisor kills a process that did not stop it.
KILL_SLACK = 30.0
#: Exit code of a worker process that stopped to be recycled (the supervisor starts a new one).
EXIT_RECYCLED = 75
#: The signal that interrupts the running job of an in-process worker (a cancel).
STOP_SIGNAL = signal.SIGUSR1

_ENDED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


# --- one worker process ---------------------------------------------------------------------------


class StoppableDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM timeout, plus ``STOP_SIGNAL`` to stop the job now; both armed only while a job runs."""

    def setup_death_penalty(self) -> None:
        super().setup_death_penalty()
        signal.signal(STOP_SIGNAL, _raise_cancelled)

    def cancel_death_penalty(self) -> None:
        signal.signal(STOP_SIGNAL, signal.SIG_IGN)
        signal.alarm(0)
        # Not SIG_DFL, as RQ does: an alarm that fires late must not kill a process that holds the model.
        signal.signal(signal.SIGALRM, signal.SIG_IGN)


def _raise_cancelled(signum, frame) -> None:
    raise JobCancelled()


class InProcessWorker(TranscriptionWorkerMixin, SimpleWorker):
    """One ``--no-fork`` worker process: RQ's ``SimpleWorker`` with ytcaption's behaviour."""

    death_penalty_class = StoppableDeathPenalty

    def __init__(self, queues, *, settings: Settings, report=None, **kwargs) -> None:
        super().__init__(queues, settings=settings, **kwargs)
        self._report = report or (lambda **event: None)
        self.jobs_done = 0
        self.recycled = False
        self.stop_signalled = False
        self._heartbeat: _Heartbeat | None = None
        self._memory_checked = 0.0

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        self._report(job=job.id, execution=execution.id)
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self)
            self._heartbeat.start()
        self._heartbeat.watch(job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._heartbeat.watch(None, None)
            self._report(job=None)
            shutil.rmtree(job_work_dir(self.settings.work_dir, job.id), ignore_errors=True)
        self.jobs_done += 1  # (the state goes back to idle when RQ's loop waits for the next job)
        self._recycle_if_worn()

    def kill_horse(self, sig=None) -> None:
        """How RQ stops the running job (a cancel, from the pubsub thread): interrupt it in-process.

        RQ has set ``_stopped_job_id`` first, so the job ends as stopped, not failed.
        """
        if self._stopped_job_id:
            self._report(stop=self._stopped_job_id)  # the supervisor kills us if the job does not stop
            os.kill(os.getpid(), STOP_SIGNAL)

    def _install_signal_handlers(self) -> None:
        # Only the supervisor decides when a job is cut short: SIGTERM asks for a warm stop
        # (finish the job, then exit), Ctrl-C in a terminal reaches the supervisor, not us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(STOP_SIGNAL, signal.SIG_IGN)  # armed only while a job runs

    def request_stop(self, signum, frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self._stop_requested:
            return  # already on its way out (being recycled)
        self.stop_signalled = True
        self._shutdown_requested_date = now()
        self.handle_warm_shutdown_request()
        self._shutdown()  # raises StopRequested when idle; else the loop ends after this job

    def _recycle_if_worn(self) -> None:
        check_memory = time.monotonic() - self._memory_checked >= 1  # reading /proc is not free
        if check_memory:
            self._memory_checked = time.monotonic()
        reason = wear(self.jobs_done, self.settings.engine_max_jobs, os.getpid() if check_memory else None,
                      self.settings.engine_max_memory_mb)
        if reason:
            self.log.info("Worker %s: recycling after %s", self.name, reason)
            self.recycled = True
            self._stop_requested = True  # RQ's work loop ends after this job


class _Heartbeat(threading.Thread):
    """Keeps the running job's heartbeat (and the worker's) alive while the main thread runs it.

    One thread for the process's life, told which job to watch: starting and joining a thread
    per job cost more than a no-op job itself. A beat racing the job's end is harmless: RQ's
    heartbeat only updates registry entries that still exist.
    """

    def __init__(self, worker: InProcessWorker) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.worker = worker
        self._lock = threading.Lock()
        self._watched: tuple[Job, Execution] | None = None

    def watch(self, job: Job | None, execution: Execution | None) -> None:
        with self._lock:
            self._watched = (job, execution) if job is not None else None

    def run(self) -> None:
        while True:
            time.sleep(self.worker.job_monitoring_interval)
            with self._lock:
                if self._watched is None:
                    continue
                try:
                    self.worker.maintain_heartbeats(*self._watched)
                except RedisError:
                    log.warning("heartbeat failed (Redis unreachable?)", exc_info=True)


def child_main(argv: Sequence[str] | None = None) -> int:
    """The entry point of one worker process (started by ``Pool``, not by hand)."""
    parser = argparse.ArgumentParser(prog="python -m workers.pool")
    parser.add_argument("--name", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--max-jobs", type=int)
    parser.add_argument("queues", nargs="+")
    args = parser.parse_args(argv)

    from app.services import connect

    settings = Settings.load()
    configure_logging(settings.log_level)
    status = os.fdopen(args.status_fd, "w", buffering=1)
    lock = threading.Lock()  # the main thread and RQ's pubsub thread both report

    def report(**event) -> None:
        try:
            with lock:
                status.write(json.dumps(event) + "\n")
        except OSError:
            pass  # the supervisor is gone: the parent watch stops this process

    _when_orphaned(lambda: os.kill(os.getpid(), signal.SIGTERM))  # finish the job, then exit
    engine = engines.create_engine(settings)
    engine.load(settings.default_model_name)  # before the first job, so none of them waits for it
    engines.use(engine)
    warm_up()
    connection = connect(settings)
    queues = [Queue(name, connection=connection) for name in args.queues]
    worker = InProcessWorker(queues, connection=connection, settings=settings, name=args.name, report=report)
    # No RQ scheduler here: the supervisor runs it (a process forked from one holding the model would
    # count the model's pages again, and die with it).
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=settings.log_level, with_scheduler=False)
    if worker.recycled:
        return EXIT_RECYCLED
    if args.burst or args.max_jobs or worker.stop_signalled:
        return 0
    log.warning("the work loop stopped (Redis unreachable?)")
    return 1  # the supervisor starts a new process, with a growing delay


def _when_orphaned(callback) -> None:
    """Call ``callback`` (in a thread) once the process that started this one is gone, even after SIGKILL."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        callback()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _Scheduler(RQScheduler):
    """RQ's scheduler process, which also stops when the supervisor that forked it is gone."""

    def work(self) -> None:
        _when_orphaned(self.request_stop)
        super().work()


# --- the supervisor -------------------------------------------------------------------------------


@dataclass
class _Child:
    """One worker process as the supervisor sees it."""

    name: str
    process: subprocess.Popen
    status: int  # the read end of its status pipe (a file descriptor)
    job_id: str | None = None
    execution_id: str | None = None
    job_started: float = 0.0
    timeout: float | None = None  # the job's, as last read from Redis
    stop_requested: float | None = None
    jobs_started: int = 0
    buffer: bytes = b""
    kill_reason: str | None = None
    started: float = field(default_factory=time.monotonic)


class Pool:
    """Start ``processes`` in-process workers and keep them running (see the module docstring)."""

    def __init__(self, connection: Redis, settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES, *,
                 processes: int = 1, burst: bool = False, max_jobs: int | None = None, name: str | None = None,
                 stop_grace: float = STOP_GRACE, kill_slack: float = KILL_SLACK) -> None:
        self.connection = connection
        self.settings = settings
        self.queue_names = list(queue_names)
        self.processes = processes
        self.burst = burst
        self.max_jobs = max_jobs
        self.name = name or uuid.uuid4().hex[:12]
        self.stop_grace = stop_grace
        self.kill_slack = kill_slack
        self.children: dict[int, _Child] = {}  # by slot
        self._restart_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._stopping_since: float | None = None
        self._force_stop = False

    # --- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        self.scheduler = _Scheduler(self.queue_names, connection=self.connection,
                                    logging_level=self.settings.log_level)
        scheduler_checked = 0.0
        for slot in range(self.processes):
            self._start(slot)
        try:
            while self.children or (self._restart_at and self._stopping_since is None):
                self._read_status(timeout=0.5)
                self._reap()
                self._enforce_limits()
                self._restart_due()
                if self._stopping_since is None and time.monotonic() - scheduler_checked >= MAINTENANCE_INTERVAL:
                    scheduler_checked = time.monotonic()
                    self._run_scheduler()
        finally:
            self._stop_scheduler()
        log.info("worker pool %s stopped", self.name)
        return 0

    def _run_scheduler(self) -> None:
        """RQ's scheduler (retries, ``enqueue_at``) for our queues, as RQ's worker runs it, from here.

        The first supervisor to take a queue's lock runs it, in a process forked from this small one.
        In burst mode the due jobs are enqueued once, as RQ's burst worker does.
        """
        process = self.scheduler._process  # RQ's worker reads it the same way
        if process is not None and process.is_alive():
            return
        try:
            if self.scheduler.acquire_locks() and self.burst:
                self.scheduler.enqueue_scheduled_jobs()
                self.scheduler.release_locks()
            elif self.scheduler.acquired_locks:
                self.scheduler.start()
        except RedisError:
            log.warning("could not run the scheduler (Redis unreachable?)", exc_info=True)

    def _stop_scheduler(self) -> None:
        process = self.scheduler._process
        if process is not None and process.is_alive():
            process.terminate()  # SIGTERM: it releases its locks and exits
            process.join(10)

    def _request_stop(self, signum, frame) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            log.info("stopping: running jobs get %s s to finish", self.settings.worker_shutdown_grace)
            for child in self.children.values():
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
        else:
            self._force_stop = True

    def _start(self, slot: int) -> None:
        read_fd, write_fd = os.pipe()
        name = f"{self.name}.{slot}"
        command = [sys.executable, "-m", "workers.pool", "--name", name, "--status-fd", str(write_fd)]
        if self.burst:
            command.append("--burst")
        if self.max_jobs:
            command += ["--max-jobs", str(self.max_jobs)]
        # Its own process group: killing it takes down anything it started.
        process = subprocess.Popen(command + self.queue_names, pass_fds=(write_fd,), start_new_session=True,
                                   env=self.child_environment())
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.children[slot] = _Child(name=name, process=process, status=read_fd)
        log.info("started worker process %s (pid %s)", name, process.pid)

    def child_environment(self) -> dict[str, str]:
        """Our environment, with the cores shared out when ``WHISPER_CPU_THREADS`` is 0 (auto)."""
        env = dict(os.environ)
        if not self.settings.whisper_cpu_threads:
            env["WHISPER_CPU_THREADS"] = str(max(1, usable_cores() // self.processes))
        return env

    # --- watching --------------------------------------------------------------------------------

    def _read_status(self, timeout: float) -> None:
        by_fd = {child.status: child for child in self.children.values()}
        if not by_fd:
            time.sleep(timeout)
            return
        try:
            readable, _, _ = select.select(list(by_fd), [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            self._take(by_fd[fd])

    def _take(self, child: _Child, until_eof: bool = False) -> None:
        """Read what ``child`` reported and act on each complete line (all of it once it exited)."""
        try:
            while data := os.read(child.status, 65536):
                child.buffer += data
                if not until_eof:
                    break
        except BlockingIOError:
            pass
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            self._on_event(child, json.loads(line))

    def _on_event(self, child: _Child, event: dict) -> None:
        if "job" in event:
            child.job_id, child.execution_id = event["job"], event.get("execution")
            child.jobs_started += child.job_id is not None
            child.job_started = time.monotonic()
            child.stop_requested = child.timeout = None
        elif "stop" in event and event["stop"] == child.job_id:
            child.stop_requested = time.monotonic()

    def _enforce_limits(self) -> None:
        """Kill a process whose job ignores its timeout, a cancel, or the shutdown grace period."""
        now = time.monotonic()
        for child in self.children.values():
            if child.job_id is None or child.kill_reason:
                continue
            reason = None
            if self._stopping_since is not None and (
                    self._force_stop or now - self._stopping_since > self.settings.worker_shutdown_grace):
                reason = "hand_back"
            elif child.stop_requested is not None and now - child.stop_requested > self.stop_grace:
                reason = "stopped"
            elif self._past_timeout(child, now - child.job_started):
                reason = "timeout"
            if reason:
                log.warning("killing worker process %s (job %s: %s)", child.name, child.job_id, reason)
                child.kill_reason = reason
                _signal_group(child.process.pid, signal.SIGKILL)  # with anything it started

    def _past_timeout(self, child: _Child, elapsed: float) -> bool:
        if child.timeout is not None and elapsed <= child.timeout + self.kill_slack:
            return False
        try:  # read again: the job extends its own timeout once it knows the video's duration
            timeout = self.connection.hget(Job.key_for(child.job_id), "timeout")
        except RedisError:
            return False
        child.timeout = float(timeout) if timeout else float(self.settings.job_timeout_floor)
        return elapsed > child.timeout + self.kill_slack

    def _reap(self) -> None:
        for slot, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            self._take(child, until_eof=True)
            del self.children[slot]
            os.close(child.status)
            if child.job_id is not None:
                self._end_abandoned_job(child, child.kill_reason or "crashed", code)
            if code not in (0, EXIT_RECYCLED):
                _signal_group(child.process.pid, signal.SIGKILL)  # anything it left behind
                self._unregister(child)
            self._schedule_restart(slot, child, code)

    def _schedule_restart(self, slot: int, child: _Child, code: int) -> None:
        if self._stopping_since is not None:
            return
        if code == 0 and (self.burst or self.max_jobs):
            return  # its work is done
        if code in (0, EXIT_RECYCLED) or child.jobs_started or time.monotonic() - child.started > 60:
            self._failures[slot] = 0
        else:
            self._failures[slot] = self._failures.get(slot, 0) + 1  # failing before any job: back off
        delay = min(30.0, 0.5 * 2 ** self._failures[slot]) if self._failures[slot] else 0.0
        if code != EXIT_RECYCLED:
            log.warning("worker process %s exited with code %s; starting it again in %.1f s", child.name, code, delay)
        self._restart_at[slot] = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self._stopping_since is not None:
            self._restart_at.clear()
            return
        for slot, when in list(self._restart_at.items()):
            if time.monotonic() >= when:
                del self._restart_at[slot]
                self._start(slot)

    # --- ending a dead process's job ------------------------------------------------------------

    def _end_abandoned_job(self, child: _Child, reason: str, code: int) -> None:
        """Record the job of a process that died, as RQ's forking worker does for a dead horse."""
        try:
            job = Job.fetch(child.job_id, connection=self.connection)
            if job.get_status() in _ENDED:
                return  # it got as far as recording its end
        except NoSuchJobError:
            return
        queue = Queue(job.origin, connection=self.connection)
        execution = Execution.fetch(child.execution_id, job.id, connection=self.connection) \
            if child.execution_id else None
        ghost = InProcessWorker([queue], connection=self.connection, settings=self.settings, name=child.name)
        if reason == "hand_back":
            log.info("handing job %s back to %s", job.id, queue.name)
            ghost.requeue_at_front(job, queue, execution)
            return
        if reason == "stopped":
            ghost._stopped_job_id = job.id
            message = "Job stopped by user, its worker process was killed."
        elif reason == "timeout":
            job.meta["error"] = describe_error(JobTimeoutException(), job)
            job.retries_left = 0  # as for a timeout inside the job: not retried
            job.save_meta()
            message = f"Job exceeded its {job.timeout} s timeout; its worker process was killed."
        else:
            message = f"Work-horse terminated unexpectedly; worker process exit code {code}."
        job.ended_at = now()
        ghost.handle_job_failure(job, queue, exc_string=message, execution=execution)

    def _unregister(self, child: _Child) -> None:
        """Remove a dead process from RQ's worker registry (it could not do it itself)."""
        ghost = InProcessWorker([], connection=self.connection, settings=self.settings, name=child.name)
        try:
            ghost.register_death()
        except RedisError:
            log.warning("could not unregister worker %s", child.name, exc_info=True)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def run(settings: Settings, queue_names: Sequence[str] = QUEUE_NAMES, *, processes: int = 1, burst: bool = False,
        max_jobs: int | None = None, name: str | None = None) -> int:
    """``ytcaption worker --no-fork``: supervise ``processes`` in-process workers until stopped."""
    from app.services import connect

    return Pool(connect(settings), settings, queue_names, processes=processes, burst=burst, max_jobs=max_jobs,
                name=name).run()


if __name__ == "__main__":
    sys.exit(child_main())
