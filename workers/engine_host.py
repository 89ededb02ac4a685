"""The engine host: one process per worker that loads the model once and serves its jobs.

Why not load the model in the worker and let RQ fork a work horse per job? CTranslate2 (the
runtime under faster-whisper) runs a model on its own threads, and threads do not survive
``fork()``: a work horse forked after the model was loaded waits forever for its first result
(seen here with faster-whisper 1.2 / ctranslate2 4.8, whatever the thread settings).

So each ``ytcaption worker`` starts this host next to it. The host loads the default model once,
then serves one transcription at a time over a private unix socket. The work horse keeps RQ's
guarantees (timeout, stop, crash detection) and talks to the host through ``RemoteEngine``.
If the host itself dies, the worker starts a new one before the next job.

A transcription that its horse leaves before the end (the job cancelled, timed out or handed back,
the horse killed) is stopped at once: once the horse is gone, its worker kills the host and starts
a new one (``EngineHost.stop_if_abandoned``). Why not let the host stop it? CTranslate2 decodes a
30-second window in one native call that nothing interrupts (seconds of CPU for a window of noise,
with its temperature fallbacks), and a window in which Whisper finds no speech sends nothing, so the
host would not even notice the closed connection before the audio's end: the worker's next job
waited for it (59 to 72 s after cancelling 90 s of noise). A new host costs a model load (about a
second for the bundled model). The horse marks the transcription it waits for until it receives
its end (``RemoteEngine.in_flight``), so the worker knows whether one was left, without asking the
busy host.

Protocol (``multiprocessing.connection`` messages): the client sends
``{"op": "transcribe", "path", "language", "model", "max_duration", "options"}`` and receives
``{"event": "duration", ...}``, ``{"event": "segment", "segment": {...}}`` and ``{"event": "progress", "fraction"}``
messages, then ``{"event": "done", ...}`` or
``{"event": "error", "type", "message"}``; ``{"op": "ping"}`` is answered ``{"event": "pong"}``, and
``{"op": "split", "path", "directory", "piece_seconds", "max_duration"}`` (a long recording cut into
pieces for several workers, ``workers.pieces``) ``{"event": "pieces", "duration", "pieces"}``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from app.core.errors import EngineUnavailable, JobError, job_error
from app.core.logs import configure_logging
from app.core.options import EngineOptions
from app.core.settings import Settings
from workers.cpu_share import CpuPool
from workers.decoding import Piece
from workers.engines import (
    CachingEngine,
    DurationCallback,
    ProgressCallback,
    Segment,
    SegmentCallback,
    Transcript,
    cpu_threads,
    create_engine,
)

log = logging.getLogger("workers.engine_host")  # also when run as __main__


class RemoteEngine:
    """The ``Engine`` a work horse uses: it forwards the work to the engine host."""

    def __init__(self, address: str) -> None:
        self.address = address
        #: Present while a transcription is asked for and its end (result or error) not yet received.
        self.in_flight = Path(address).with_name("transcribing")

    def _connect(self) -> Connection:
        try:
            return Client(self.address, family="AF_UNIX")
        except OSError as exc:
            raise EngineUnavailable(f"The engine host is not reachable: {exc}.") from exc

    def ping(self) -> bool:
        try:
            with self._connect() as conn:
                conn.send({"op": "ping"})
                return conn.recv().get("event") == "pong"
        except (EngineUnavailable, OSError, EOFError):
            return False

    def transcribe(
        self,
        path: str,
        *,
        language: str | None,
        model: str,
        max_duration: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_duration: DurationCallback | None = None,
        on_segment: SegmentCallback | None = None,
        options: EngineOptions = EngineOptions(),
    ) -> Transcript:
        # Marked before the request and cleared only once its end is received: a horse that leaves
        # before (killed, or an exception raised in it) leaves the mark for its worker to see.
        try:
            self.in_flight.write_text(os.environ.get("RQ_JOB_ID") or "")
        except OSError as exc:  # the host's directory is gone: its worker is stopping
            raise EngineUnavailable(f"The engine host is not reachable: {exc}.") from exc
        with self._connect() as conn:
            conn.send({"op": "transcribe", "path": path, "language": language, "model": model,
                       "max_duration": max_duration, "options": options.as_job(),
                       "job_id": os.environ.get("RQ_JOB_ID")})
            segments: list[Segment] = []
            duration = 0.0
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError) as exc:
                    raise EngineUnavailable() from exc
                event = message["event"]
                if event == "duration":
                    duration = message["duration"]
                    if on_duration:
                        on_duration(duration)
                elif event == "segment":
                    segments.append(Segment.from_dict(message["segment"]))
                    if on_segment:
                        on_segment(segments[-1], min(1.0, segments[-1].end / duration) if duration else 0.0)
                elif event == "progress":
                    if on_progress:
                        on_progress(message["fraction"])
                elif event == "done":
                    self.in_flight.unlink(missing_ok=True)
                    return Transcript(language=message["language"], duration=message["duration"],
                                      model=message["model"], segments=segments,
                                      model_load_seconds=message["model_load_seconds"],
                                      speech_seconds=message["speech_seconds"])
                else:
                    self.in_flight.unlink(missing_ok=True)
                    raise job_error(message["type"], message["message"])

    def split(self, path: str, directory: str, piece_seconds: float,
              max_duration: float | None = None) -> tuple[float, list[Piece]]:
        """``CachingEngine.split`` in the host, which has the voice-activity model loaded."""
        with self._connect() as conn:
            conn.send({"op": "split", "path": path, "directory": directory, "piece_seconds": piece_seconds,
                       "max_duration": max_duration, "job_id": os.environ.get("RQ_JOB_ID")})
            try:
                message = conn.recv()
            except (EOFError, OSError) as exc:
                raise EngineUnavailable() from exc
        if message["event"] == "error":
            raise job_error(message["type"], message["message"])
        return message["duration"], [Piece(**piece) for piece in message["pieces"]]


class EngineHost:
    """The worker's handle on its engine host process: start, check, restart, stop.

    With ``WHISPER_CPU_THREADS=0`` the host's transcriptions get this worker's share of the cores,
    counted in its CPU ``pool`` when it starts (``workers.cpu_share``), and given to the host as
    its ``WHISPER_CPU_THREADS``; ``follow_cpu_share`` starts a new host when the share changed.
    """

    def __init__(self, settings: Settings, start_timeout: float = 300.0, pool: CpuPool | None = None) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self.pool = pool
        #: The threads the running host's transcriptions use.
        self.threads = 0
        self._dir = Path(tempfile.mkdtemp(prefix="ytcaption-engine-"))  # mode 0700: private socket
        self.address = str(self._dir / "engine.sock")
        self.process: subprocess.Popen | None = None
        self.client = RemoteEngine(self.address)
        self.jobs_served = 0

    def start(self, threads: int | None = None) -> None:
        """Start the host and wait until its default model is loaded; its transcriptions use ``threads``
        CPU threads (by default ``wanted_threads()``)."""
        started = time.monotonic()
        self.threads = threads or self.wanted_threads()
        if os.path.exists(self.address):
            os.unlink(self.address)  # left by a host that died
        self.client.in_flight.unlink(missing_ok=True)  # a transcription of a host that died is no more
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.engine_host", self.address, str(os.getpid())],
            # Its own session: a Ctrl-C meant for the worker (which finishes its job first)
            # must not kill the engine under that job. The worker stops it when it exits.
            start_new_session=True,
            stdin=subprocess.PIPE,
        )
        # The worker's settings, as they are (its threads counted): the host does not read the environment again.
        with self.process.stdin as pipe:
            pipe.write(self.settings.model_copy(update={"whisper_cpu_threads": self.threads}).to_json().encode())
        while time.monotonic() - started < self.start_timeout:
            if self.process.poll() is not None:
                raise EngineUnavailable(
                    f"The engine host exited with code {self.process.returncode} while starting; see its log above."
                )
            if os.path.exists(self.address) and self.client.ping():
                self.jobs_served = 0
                log.info("engine host pid %s ready in %.1f s, %s per transcription", self.process.pid,
                         time.monotonic() - started, _threads(self.threads))
                return
            time.sleep(0.05)
        self.stop()
        raise EngineUnavailable(f"The engine host did not become ready within {self.start_timeout:.0f} s.")

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        """Restart the host if it died (a crash in native code, the OOM killer, ...)."""
        if not self.is_alive():
            if self.process is not None:
                log.warning("engine host exited with code %s; starting a new one", self.process.returncode)
            self.start()

    def wanted_threads(self) -> int:
        """The threads a transcription should use now: ``WHISPER_CPU_THREADS``, or this worker's share."""
        if self.settings.whisper_cpu_threads or self.pool is None:
            return cpu_threads(self.settings)
        return cpu_threads(self.settings, self.pool.workers())

    def follow_cpu_share(self) -> bool:
        """Start a new host if this worker's share of the cores changed since this one started (workers
        came or went); say whether it did. The new host loads the model again."""
        if not self.is_alive() or (threads := self.wanted_threads()) == self.threads:
            return False
        log.info("restarting the engine host with %s per transcription instead of %d (workers sharing the cores "
                 "came or went)", _threads(threads), self.threads)
        self.stop(remove_socket_dir=False)
        self.start(threads)
        return True

    def recycle_if_worn(self, max_jobs: int, max_memory_mb: int) -> None:
        """Count one more job; restart the host after ``max_jobs`` jobs or above ``max_memory_mb``."""
        self.jobs_served += 1
        reason = None
        if max_jobs and self.jobs_served >= max_jobs:
            reason = f"{self.jobs_served} jobs"
        elif max_memory_mb and (resident := resident_memory_mb(self.process.pid)) > max_memory_mb:
            reason = f"{resident:.0f} MB resident, above {max_memory_mb} MB"
        if reason and self.is_alive():
            log.info("recycling the engine host after %s", reason)
            self.stop(remove_socket_dir=False)
            self.start()

    def stop_if_abandoned(self) -> bool:
        """Kill the host if the last job left a transcription on it unfinished; say whether it did.

        Called once the job's horse is gone: the host may still be transcribing for nobody, and
        would hold the worker's next job until the audio's end (see the module's docstring).
        """
        try:
            job_id = self.client.in_flight.read_text() or None
        except FileNotFoundError:
            return False
        log.warning("the job left its transcription unfinished; stopping the engine host", extra={"job_id": job_id})
        self.stop(remove_socket_dir=False)
        self.client.in_flight.unlink(missing_ok=True)
        return True

    def stop(self, remove_socket_dir: bool = True) -> None:
        """Kill the host (it has nothing to save; it ignores SIGTERM, see ``serve``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if remove_socket_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def _threads(count: int) -> str:
    return f"{count} CPU thread" + ("" if count == 1 else "s")


def resident_memory_mb(pid: int) -> float:
    """A process's resident memory in MB (Linux), 0.0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


# --- the host process -------------------------------------------------------------------------


def serve(address: str, parent_pid: int, settings: Settings) -> None:
    """Load the default model, then serve transcriptions until the worker goes away.

    SIGTERM is ignored: platforms that send it to every process (Heroku) must not kill the
    engine under a job the worker is letting finish. The host exits with its worker.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    engine = create_engine(settings)
    engine.load(settings.default_model_name)
    _exit_with_parent(parent_pid)
    with Listener(address, family="AF_UNIX") as listener:
        while True:
            with listener.accept() as conn:
                _handle(conn, engine)


def _handle(conn: Connection, engine: CachingEngine) -> None:
    request: dict = {}
    try:
        request = conn.recv()
        if request.get("op") == "ping":
            conn.send({"event": "pong"})
            return
        if request.get("op") == "split":
            _split(conn, engine, request)
            return

        # Each send raises BrokenPipeError once the work horse is gone: that abandons the transcription.
        def send_segment(segment: Segment, fraction: float) -> None:
            conn.send({"event": "segment", "segment": segment.as_dict()})

        def send_progress(fraction: float) -> None:
            conn.send({"event": "progress", "fraction": fraction})

        job = {"job_id": request.get("job_id")}  # on every log line about this request
        started = time.perf_counter()
        log.info("transcribing", extra={**job, "model": request["model"]})
        try:
            transcript = engine.transcribe(
                request["path"], language=request["language"], model=request["model"],
                max_duration=request["max_duration"], on_segment=send_segment, on_progress=send_progress,
                on_duration=lambda duration: conn.send({"event": "duration", "duration": duration}),
                options=EngineOptions.from_job(request.get("options")),
            )
        except JobError as exc:
            log.info("transcription refused", extra={**job, "error": exc.code})
            conn.send({"event": "error", "type": exc.code, "message": exc.message})
            return
        except (OSError, EOFError):
            raise
        except Exception as exc:  # report, keep serving: one bad file must not kill the host
            log.exception("transcription failed", extra=job)
            conn.send({"event": "error", "type": "engine_error", "message": (
                f"The transcription engine failed ({exc.__class__.__name__}); the worker's log has the details.")})
            return
        log.info("transcribed", extra={**job, "audio_seconds": round(transcript.duration, 1),
                                       "seconds": round(time.perf_counter() - started, 2),
                                       "segments": len(transcript.segments),
                                       "speech_seconds": transcript.speech_seconds})
        conn.send({"event": "done", "language": transcript.language, "duration": transcript.duration,
                   "model": transcript.model, "model_load_seconds": transcript.model_load_seconds,
                   "speech_seconds": transcript.speech_seconds})
    except (OSError, EOFError):
        log.info("client went away; transcription abandoned", extra={"job_id": request.get("job_id")})


def _split(conn: Connection, engine: CachingEngine, request: dict) -> None:
    job = {"job_id": request.get("job_id")}
    started = time.perf_counter()
    try:
        duration, pieces = engine.split(request["path"], request["directory"], request["piece_seconds"],
                                        request["max_duration"])
    except JobError as exc:
        conn.send({"event": "error", "type": exc.code, "message": exc.message})
        return
    except Exception as exc:  # as for a transcription: report, keep serving
        log.exception("splitting failed", extra=job)
        conn.send({"event": "error", "type": "engine_error", "message": (
            f"The transcription engine failed ({exc.__class__.__name__}); the worker's log has the details.")})
        return
    log.info("split", extra={**job, "audio_seconds": round(duration, 1), "pieces": len(pieces),
                             "seconds": round(time.perf_counter() - started, 2)})
    conn.send({"event": "pieces", "duration": duration, "pieces": [asdict(piece) for piece in pieces]})


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the worker that started us is gone (even after SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    address, parent_pid = sys.argv[1], int(sys.argv[2])
    settings = Settings.from_json(sys.stdin.read())
    configure_logging(settings.log_level)
    try:
        serve(address, parent_pid, settings)
    except JobError as exc:  # the default model cannot be loaded: say so and stop
        log.error("%s", exc.message)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
