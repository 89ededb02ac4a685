"""The kill storm: jobs submitted in bursts while worker processes are killed, a worker is frozen
and Redis is killed; afterwards every accepted job must have completed exactly once.

``python -m bench.storm [--jobs 300]`` (``make storm``) prints the figures; ``tests/test_storm.py``
runs a shorter storm (60 jobs) and asserts on them. Everything is real: a persistent
``redis-server`` killed with SIGKILL and restarted from its append-only file, the API under
gunicorn answered over HTTP, ``ytcaption worker`` processes (their main process, work horse or
engine host killed with SIGKILL, or all three, a lost machine; the worker started again, as a
supervisor would), one worker
frozen with SIGSTOP (main, horse and engine host: a machine that stops answering while Redis
still holds its connections) and resumed with SIGCONT.

A submit is retried, with the same ``Idempotency-Key``, until the API answers 202 (or 200, the
replay of an accepted submit): "accepted" means the client got that answer. The URLs come in pairs:
the second of a pair usually follows the first's work (in-flight sharing), the pairs are separate work.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rq import Queue, Worker
from rq.job import Job

from app.core import reliability, stats
from app.core.processes import children, descendants
from app.core.redis_server import RedisServer, free_port
from app.core.settings import Settings
from app.stack import commands
from bench.harness import FIXTURES, Harness, http_json

SUBMIT = "/api/v1/transcribe/async/submit"
#: Seconds given to a resumed worker to do harm (it heartbeats every 5 s) before the last look.
SETTLE = 10


@dataclass
class Event:
    """One blow: what was hit, when, and the job the worker was running (whose recovery is timed)."""

    kind: str  # kill-main, kill-horse, kill-engine-host, kill-machine (all of a worker's processes), freeze, redis
    at: float  # time.time()
    job_id: str | None = None
    recovered_after: float | None = None


@dataclass
class StormResult:
    accepted: list[str] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)  # job id -> RQ status at the end
    counted_finished: int = 0
    transcripts: int = 0
    ledger_left: int = 0
    recovered: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    seconds: float = 0.0
    submit_retries: int = 0
    seed: int | None = None

    @property
    def completed(self) -> int:
        return sum(status == "finished" for status in self.final.values())

    @property
    def lost(self) -> list[str]:
        return [job_id for job_id, status in self.final.items() if status != "finished"]

    def recovery(self, *kinds: str) -> list[float]:
        return sorted(e.recovered_after for e in self.events if e.kind in kinds and e.recovered_after is not None)

    def summary(self) -> dict:
        def spread(values: list[float]) -> dict:
            return {"n": len(values), "p50": round(statistics.median(values), 1) if values else None,
                    "max": round(max(values), 1) if values else None}

        kinds = {}
        for event in self.events:
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
        return {
            "jobs_accepted": len(self.accepted), "jobs_completed": self.completed, "jobs_lost": len(self.lost),
            "completions_counted": self.counted_finished, "transcripts": self.transcripts,
            "ledger_left": self.ledger_left, "blows": kinds, "recovered": self.recovered,
            "recovery_after_process_death_s": spread(self.recovery("kill-main", "kill-horse", "kill-engine-host")),
            "recovery_after_machine_death_s": spread(self.recovery("kill-machine")),
            "recovery_after_freeze_s": spread(self.recovery("freeze")),
            "submit_retries": self.submit_retries, "seconds": round(self.seconds), "seed": self.seed,
        }


class Storm:
    def __init__(self, harness: Harness, *, jobs: int, workers: int = 2, burst: int = 6, burst_every: float = 2.0,
                 kill_every: float = 4.0, freeze_at: float = 8.0, freeze_for: float = 30.0,
                 redis_kill_at: float = 20.0, seed: int | None = None, timeout: float = 900.0) -> None:
        self.h = harness
        self.jobs, self.workers, self.burst, self.burst_every = jobs, workers, burst, burst_every
        self.kill_every, self.freeze_at, self.freeze_for, self.redis_kill_at = (
            kill_every, freeze_at, freeze_for, redis_kill_at)
        seed = seed if seed is not None else random.randrange(10**6)
        self.random = random.Random(seed)
        self.timeout = timeout
        self.result = StormResult(seed=seed)  # printed, so that a storm that went wrong can be run again
        self.lock = threading.Lock()
        self.frozen: str | None = None
        self.redis_down = threading.Event()
        self.done_submitting = threading.Event()
        self.all_ended = threading.Event()
        self.thawed = threading.Event()
        self.froze_once = False
        self.frozen_pids: list[int] = []
        self.spawned = 0
        self.sessions: list[int] = []

    # --- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        h = self.h
        h.redis_server = RedisServer(h.dir / "redis", port=free_port(), persistent=True)
        h.redis_server.start()
        h.serve_media(FIXTURES)
        # A blow to a job's worker costs the job an attempt (a job that keeps killing its worker must
        # fail in the end); the storm is about losing jobs, so each job has attempts to spare.
        storm_settings = {"JOB_MAX_RETRIES": "20", "JOB_RETRY_BASE": "0", "JOB_RETRY_MAX": "0"}
        self.env = h.env(**storm_settings)
        port = free_port()
        web = commands(Settings.load({"PORT": port, "WEB_CONCURRENCY": 2}), "127.0.0.1")["web"]
        self.api = h.start_gunicorn("api", web, "/healthz", port, h.env(PORT=str(port), WEB_CONCURRENCY="2",
                                                                          **storm_settings))
        self.key = h.api_key()
        names = [self.spawn_worker() for _ in range(self.workers)]
        h.wait_for_rq_workers("express", self.workers, names)

    def spawn_worker(self) -> str:
        name = f"worker-{self.spawned}"
        self.spawned += 1
        process = self.h.spawn(name, commands(Settings.load(), "127.0.0.1")["worker"], self.env)
        self.sessions.append(process.pid)
        return name

    # --- the storm ------------------------------------------------------------------------------

    def run(self) -> StormResult:
        started = time.monotonic()
        threads = [threading.Thread(target=self.submit_all, daemon=True),
                   threading.Thread(target=self.blows, daemon=True)]
        for thread in threads:
            thread.start()
        threads[0].join()
        self.h.say(f"storm: {len(self.result.accepted)} jobs accepted; waiting for them to end")
        self.wait_for_the_end()
        # The frozen worker, once resumed, must not end a job again: wait for the thaw, give it
        # time to act (a heartbeat, a progress update), and look again.
        self.h.wait_until(lambda: self.thawed.is_set() or not self.froze_once, "the frozen worker to resume",
                          timeout=self.freeze_for + 60)
        time.sleep(SETTLE)
        self.wait_for_the_end()
        self.all_ended.set()
        threads[1].join()
        self.result.seconds = time.monotonic() - started
        self.collect()
        return self.result

    def submit_all(self) -> None:
        while len(self.result.accepted) < self.jobs:
            for _ in range(min(self.burst, self.jobs - len(self.result.accepted))):
                # Two submits per URL, one after the other: the second shares the first's work while it is in
                # flight (app.core.sharing), so followers go through the storm too; each pair is a job of its own.
                url = self.h.media.url("fox.m4a", pair=len(self.result.accepted) // 2)
                self.result.accepted.append(self.submit(url))
            time.sleep(self.burst_every)
        self.done_submitting.set()

    def submit(self, url: str) -> str:
        idempotency_key = uuid.uuid4().hex
        while True:
            try:
                code, body = http_json("POST", self.api + SUBMIT, self.key, {"youtube_url": url},
                                       headers={"Idempotency-Key": idempotency_key})
            except OSError:
                code, body = None, {}
            if code in (200, 202):
                return body["job_id"]
            if code not in (None, 503):
                raise RuntimeError(f"submit answered {code}: {body}")
            self.result.submit_retries += 1
            time.sleep(0.5)

    def blows(self) -> None:
        """Every ``kill_every`` s a SIGKILL to a random worker process; once a freeze, once Redis;
        until every job ended."""
        start = time.monotonic()
        froze = redis_killed = False
        next_kill = start + self.kill_every
        while not self.all_ended.is_set():
            self.supervise()
            now = time.monotonic()
            if not froze and now - start >= self.freeze_at:
                froze = self.freeze()
            elif not redis_killed and now - start >= self.redis_kill_at:
                self.kill_redis()
                redis_killed = True
            elif now >= next_kill:
                self.kill_random()
                next_kill = now + self.kill_every
            time.sleep(0.1)

    def supervise(self) -> None:
        """Start a worker for each one that exited by itself (e.g. its engine host was killed while
        loading the model), as a supervisor would; killed ones are started again at once."""
        running = [name for name, process in self.h.children.items()
                   if name.startswith("worker-") and process.poll() is None]
        for _ in range(self.workers - len(running)):
            self.spawn_worker()

    def live_workers(self) -> list[str]:
        """Workers that are running and registered (a blow to a worker still loading its model would
        only starve the storm of workers)."""
        try:
            registered = {worker.pid for worker in Worker.all(connection=self.h.redis)}
        except Exception:  # Redis restarting
            return []
        return [name for name, process in self.h.children.items()
                if name.startswith("worker-") and process.poll() is None and name != self.frozen
                and process.pid in registered]

    def job_of(self, name: str) -> str | None:
        pid = self.h.children[name].pid
        try:
            for worker in Worker.all(connection=self.h.redis):
                if worker.pid == pid:
                    return worker.get_current_job_id()
        except Exception:  # Redis down: the blow is still dealt, its recovery not timed
            return None
        return None

    def kill_random(self) -> None:
        live = self.live_workers()
        if not live:
            return
        name = self.random.choice(live)
        main = self.h.children[name].pid
        horse, engine_host = _horse_and_engine_host(main)
        targets = {"kill-main": [main], "kill-horse": [horse], "kill-engine-host": [engine_host],
                   "kill-machine": [main, *descendants(main)]}
        kind = self.random.choice([kind for kind, pids in targets.items() if all(pids)])
        event = Event(kind, time.time(), self.job_of(name))
        for pid in targets[kind]:
            _kill(pid, signal.SIGKILL)
        self.record(event)
        if kind in ("kill-main", "kill-machine"):
            self.h.children[name].wait()  # ``supervise`` starts another

    def freeze(self) -> bool:
        live = [name for name in self.live_workers() if self.job_of(name)]
        if not live:
            return False  # wait for a worker with a job
        name = self.random.choice(live)
        self.frozen = name
        self.froze_once = True
        pids = [self.h.children[name].pid, *descendants(self.h.children[name].pid)]
        event = Event("freeze", time.time(), self.job_of(name))
        for pid in pids:
            _kill(pid, signal.SIGSTOP)
        self.frozen_pids = pids
        self.record(event)
        self.h.say(f"storm: froze {name} (job {event.job_id}) for {self.freeze_for:.0f} s")

        def thaw():
            for pid in pids:
                _kill(pid, signal.SIGCONT)
            self.frozen = None
            self.thawed.set()
            self.h.say(f"storm: {name} resumed")

        timer = threading.Timer(self.freeze_for, thaw)
        timer.daemon = True
        timer.start()
        return True

    def kill_redis(self) -> None:
        self.h.say("storm: kill -9 Redis, then start it again from its append-only file")
        self.record(Event("redis", time.time()))
        self.h.redis_server.kill()
        self.h.redis_server.start()

    def record(self, event: Event) -> None:
        with self.lock:
            self.result.events.append(event)
        if event.job_id:
            threading.Thread(target=self.time_recovery, args=(event,), daemon=True).start()

    def time_recovery(self, event: Event) -> None:
        """Seconds from the blow until the job is waiting on its queue again, runs again (started
        after the blow) or has finished: the time the job was in no one's hands."""
        job_key = Job.key_for(event.job_id)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                status, started_at, origin = self.h.redis.hmget(job_key, "status", "started_at", "origin")
                queued = status == b"queued" and self.h.redis.lpos(
                    Queue.redis_queue_namespace_prefix + origin.decode(), event.job_id) is not None
            except Exception:  # Redis restarting
                status = started_at = None
                queued = False
            if queued or status == b"finished" or (
                    status == b"started" and started_at and _epoch(started_at) > event.at):
                event.recovered_after = time.time() - event.at
                return
            time.sleep(0.1)

    # --- the end --------------------------------------------------------------------------------

    def statuses(self) -> dict[str, str]:
        with self.h.redis.pipeline(transaction=False) as pipe:
            for job_id in self.result.accepted:
                pipe.hget(Job.key_for(job_id), "status")
            values = pipe.execute()
        return {job_id: (value or b"missing").decode() for job_id, value in zip(self.result.accepted, values)}

    def wait_for_the_end(self) -> None:
        """Until every accepted job ended, or ``timeout`` s (what has not ended then is lost)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                if self.done_submitting.is_set() and all(
                        s in ("finished", "failed", "canceled", "stopped") for s in self.statuses().values()):
                    return
            except Exception:  # Redis restarting
                pass
            time.sleep(1.0)

    def collect(self) -> None:
        redis, result = self.h.redis, self.result
        result.final = self.statuses()
        result.counted_finished = sum(int(value) for field_, value in redis.hgetall(stats.COMPLETED).items()
                                      if field_.endswith(b"|finished"))
        result.transcripts = sum(1 for _ in redis.scan_iter("ytcaption:transcript:*"))
        result.ledger_left = redis.zcard(reliability.LEDGER)
        result.recovered = {k.decode(): int(v) for k, v in redis.hgetall(stats.RECOVERED).items()}

    def close(self) -> None:
        """Stop what is left, including work horses orphaned by a killed main process (and a frozen
        engine host, which runs in a session of its own and could not notice its worker's end)."""
        for pid in self.frozen_pids:
            _kill(pid, signal.SIGCONT)
        for pid in self.sessions:
            for other in _pids_in_session(pid):
                _kill(other, signal.SIGCONT)
                _kill(other, signal.SIGKILL)


def run(jobs: int, seed: int | None = None, keep: bool = False, **options) -> StormResult:
    with Harness(keep=keep) as harness:
        storm = Storm(harness, jobs=jobs, seed=seed, **options)
        try:
            storm.start()
            return storm.run()
        finally:
            storm.close()


# --- processes --------------------------------------------------------------------------------


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _horse_and_engine_host(main: int) -> tuple[int | None, int | None]:
    """The engine host runs ``python -m workers.engine_host`` (in a session of its own); the work horse
    leads its own process group (RQ's ``setpgrp``); RQ's scheduler process, the third child, does neither."""
    horse = engine_host = None
    for child in children(main):
        try:
            if b"workers.engine_host" in Path(f"/proc/{child}/cmdline").read_bytes():
                engine_host = child
            elif os.getpgid(child) == child:
                horse = child
        except OSError:
            continue
    return horse, engine_host


def _pids_in_session(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _epoch(value: bytes) -> float:
    return datetime.fromisoformat(value.decode().replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = parser.parse_args(argv)
    result = run(args.jobs, seed=args.seed, keep=args.keep)
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    if result.lost:
        print(f"LOST: {result.lost}", file=sys.stderr)
    ok = not result.lost and summary["completions_counted"] == summary["transcripts"] == len(result.accepted)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
