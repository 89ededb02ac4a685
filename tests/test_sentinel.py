"""Redis Sentinel: a real master, its replicas and three Sentinels on loopback; the master is killed.

The API, a `ytcaption worker`, the CLI and rq-dashboard find the master through the Sentinels. With
REDIS_WAIT_REPLICAS=1 no job whose submit was answered 202 may be lost in the failover; what the
worker wrote that no replica had yet is lost, and the work is done again.
"""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker

from app.core.redis_server import find_redis_server, free_port
from app.core.services import connect
from app.core.settings import Settings
from tests.helpers import (
    http,
    job_status,
    start_api,
    start_worker,
    stop_process,
    wait_for,
    ytcaption_command,
)

MASTER_NAME = "mymaster"
SUBMIT = "/api/v1/transcribe/async/submit"


class SentinelCluster:
    """A master, its replicas and three Sentinels (quorum 2), each a `redis-server` on 127.0.0.1."""

    def __init__(self, directory, replicas: int, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.down_after_ms = down_after_ms
        self.binary = find_redis_server()
        self.master_port = free_port()
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        workdir = self.directory / name
        workdir.mkdir()
        log = workdir / "redis.log"
        self.processes[name] = subprocess.Popen([*args, "--dir", str(workdir), "--logfile", str(log)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                start_new_session=True)

    def _server(self, port: int) -> list[str]:
        return [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", "",
                "--appendonly", "no", "--maxmemory-policy", "noeviction", "--repl-diskless-sync-delay", "0"]

    def start(self) -> None:
        self._start("master", self._server(self.master_port))
        for number, port in enumerate(self.replica_ports):
            self._start(f"replica-{number}", [*self._server(port), "--replicaof", "127.0.0.1", str(self.master_port)])
        for number, port in enumerate(self.sentinel_ports):
            config = self.directory / f"sentinel-{number}.conf"  # a Sentinel rewrites its own file
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            self._start(f"sentinel-{number}", [self.binary, str(config), "--sentinel", "--daemonize", "no"])
        wait_for(self.ready, timeout=60, interval=0.2, message="the replicas to sync and the Sentinels to meet")

    def client(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def sentinel_view(self, port: int) -> dict:
        with self.client(port) as sentinel:
            return sentinel.sentinel_master(MASTER_NAME)

    def ready(self) -> bool:
        """The replicas are in sync, and every Sentinel knows them and the two other Sentinels."""
        try:
            for port in self.replica_ports:
                with self.client(port) as replica:
                    if replica.info("replication").get("master_link_status") != "up":
                        return False
            views = [self.sentinel_view(port) for port in self.sentinel_ports]
        except RedisError:
            return False
        return all(view["num-slaves"] == len(self.replica_ports) and view["num-other-sentinels"] == 2
                   for view in views)

    def master_port_now(self) -> int | None:
        """The master's port as the Sentinels say (None while they disagree or are unsure)."""
        try:
            views = [self.sentinel_view(port) for port in self.sentinel_ports]
        except RedisError:
            return None
        ports = {int(view["port"]) for view in views}
        return ports.pop() if len(ports) == 1 else None

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, timeout=10)

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)


@pytest.fixture
def cluster(request, tmp_path):
    """Two replicas unless the test says otherwise (``@pytest.mark.parametrize("cluster", [1], indirect=True)``):
    with REDIS_WAIT_REPLICAS=1 a master needs a replica left after one is promoted."""
    cluster = SentinelCluster(tmp_path, replicas=getattr(request, "param", 2))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_env(cluster, tmp_path) -> dict[str, str]:
    """The environment of every process of the test: Redis through the Sentinels, never REDIS_URL."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in
           {name.upper() for name in Settings.model_fields}}
    env.update({
        "REDIS_SENTINELS": cluster.sentinels,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "REDIS_WAIT_REPLICAS": "1",
        "REDIS_WAIT_TIMEOUT": "10",
        "ALLOWED_URL_HOSTS": "127.0.0.1:*",
        "WORK_DIR": str(tmp_path / "work"),
        "DATA_DIR": str(tmp_path / "data"),
        "JOB_RETRY_BASE": "1",
        "JOB_RETRY_MAX": "2",
        **{f"RATE_LIMIT_{tier}": "100000" for tier in ("FREE", "PRO", "ENTERPRISE")},
    })
    return env


def create_user(env: dict[str, str], email: str, *flags: str) -> dict[str, str]:
    """A pro user made with the CLI (which finds the master through the Sentinels too)."""
    result = subprocess.run([ytcaption_command(), "users", "create", "--tier", "pro", "--email", email, *flags],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {"Authorization": f"Bearer {result.stdout.splitlines()[-1]}"}


def submit(url: str, headers: dict, video: str, **extra_headers: str) -> tuple[int | None, dict, dict]:
    """POST a submit; ``(status, headers, body)``. A minute to answer: during a failover the API retries
    Redis for some seconds, then may wait REDIS_WAIT_TIMEOUT for a replica (helpers.http gives 10 s)."""
    request = urllib.request.Request(url + SUBMIT, data=json.dumps({"youtube_url": video}).encode(), method="POST",
                                     headers={**headers, **extra_headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            code, response_headers, text = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        code, response_headers, text = error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, {}, {}
    try:
        return code, response_headers, json.loads(text)
    except ValueError:  # not JSON: the test fails on the status
        return code, response_headers, {}


def replication_delays(connection: Redis, samples: int = 200) -> list[float]:
    """Milliseconds from a write on the master to a replica's acknowledgement of it (``WAIT 1``):
    how long an accepted write lives on the master alone."""
    delays = []
    for number in range(samples):
        with connection.pipeline(transaction=False) as pipe:
            started = time.perf_counter()
            pipe.set("test:replication-delay", number).execute_command("WAIT", 1, 5000).execute()
            delays.append((time.perf_counter() - started) * 1000)
    return sorted(delays)


class Submitter(threading.Thread):
    """Submits a short video every ``pause`` seconds until stopped; records every answer."""

    def __init__(self, url: str, headers: dict, video: str, pause: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.video, self.pause = url, headers, video, pause
        self.answers: list[tuple[float, int | None, str | None]] = []  # (monotonic time, status, job id)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            code, _, body = submit(self.url, self.headers, self.video)
            self.answers.append((time.monotonic(), code, body.get("job_id")))
            self.stopping.wait(self.pause)

    def accepted(self, after: float = 0.0) -> list[str]:
        return [job_id for at, code, job_id in self.answers if code == 202 and at > after]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.load({key: value for key, value in env.items() if key.lower() in Settings.model_fields})


def ended(url: str, headers: dict, job_ids: list[str]) -> bool:
    return not not_ended(url, headers, job_ids)


def not_ended(url: str, headers: dict, job_ids: list[str]) -> dict[str, dict]:
    """The status of each job in ``job_ids`` that has not ended (a failure message names them)."""
    statuses = {job_id: job_status(url, headers, job_id) for job_id in job_ids}
    return {job_id: body for job_id, body in statuses.items()
            if body["status"] not in ("completed", "failed", "cancelled")}


def test_a_master_failover_loses_no_accepted_job(cluster, sentinel_env, media_server):
    """kill -9 of the master while a job runs and submits keep coming: the Sentinels promote a replica,
    the API answers again (503 meanwhile, never 500), the same worker goes on, and every job answered
    202 completes (REDIS_WAIT_REPLICAS=1; two replicas, so the new master still has one)."""
    env = sentinel_env
    connection = connect(settings_of(env))
    headers = create_user(env, "ha@example.com")
    admin = create_user(env, "ops@example.com", "--admin")
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    api = worker = submitter = None
    try:
        api = start_api(api_port, env)
        worker = start_worker(connection, env=env)
        delays = replication_delays(connection)
        # A job in flight when the master dies: a download trickled over a few seconds.
        code, _, body = submit(url, headers, media_server.url("lecture.webm", delay=0.3))
        assert code == 202, body
        long_job = body["job_id"]
        wait_for(lambda: job_status(url, headers, long_job)["stage"] == "downloading", timeout=120,
                 message="the long job to start")
        submitter = Submitter(url, headers, media_server.url("fox.m4a"))
        submitter.start()
        wait_for(lambda: len(submitter.accepted()) >= 3, timeout=60, message="submits before the failover")

        old_master = cluster.master_port
        cluster.kill("master")
        killed_at = time.monotonic()
        wait_for(lambda: cluster.master_port_now() not in (None, old_master), timeout=120, interval=0.1,
                 message="the Sentinels to elect a replica")
        elected_at = time.monotonic()
        wait_for(lambda: submitter.accepted(after=killed_at), timeout=120, interval=0.1,
                 message="a submit accepted after the failover")
        first_accepted = min(at for at, code, _ in submitter.answers if code == 202 and at > killed_at)
        wait_for(lambda: job_status(url, headers, long_job)["status"] == "completed", timeout=180, interval=0.2,
                 message="the job in flight to complete")
        long_job_done = time.monotonic()

        def new_job_started() -> float | None:
            for job_id in submitter.accepted(after=killed_at):
                if job_status(url, headers, job_id)["status"] in ("processing", "completed"):
                    return time.monotonic()
            return None

        new_job_at = wait_for(new_job_started, timeout=180, interval=0.2,
                              message="the worker to start a job submitted after the failover")
        wait_for(lambda: len(submitter.accepted(after=killed_at)) >= 3, timeout=60,
                 message="more submits after the failover")
        submitter.stopping.set()
        submitter.join(timeout=30)

        accepted = [long_job, *submitter.accepted()]
        refused = [(round(at - killed_at, 1), code) for at, code, _ in submitter.answers if code != 202]
        try:
            wait_for(lambda: ended(url, headers, accepted), timeout=600, interval=1,
                     message="every accepted job to end")
        except AssertionError as error:
            raise AssertionError(f"{error}; not ended: {not_ended(url, headers, accepted)}") from None
        outcome = {job_id: job_status(url, headers, job_id) for job_id in accepted}
        code, _, text = http("GET", url + "/rq/0/data/workers.json", admin)  # rq-dashboard, on the new master
        print(f"\nreplica acknowledgement of a write (WAIT 1), ms: median {delays[len(delays) // 2]:.2f}, "
              f"99th percentile {delays[len(delays) * 99 // 100]:.2f}, max {delays[-1]:.2f}")
        print(f"after kill -9 of the master: all three Sentinels name the new master after "
              f"{elected_at - killed_at:.1f} s; the API accepts a submit after {first_accepted - killed_at:.1f} s; "
              f"the job in flight completes after {long_job_done - killed_at:.1f} s (attempt "
              f"{outcome[long_job]['attempt']}); a job submitted after the kill starts after "
              f"{new_job_at - killed_at:.1f} s")
        print(f"submits: {len(submitter.answers)}, answered 202: {len(accepted) - 1} (+1 long job), others: "
              f"{refused} (seconds after the kill, status); completed "
              f"{sum(body['status'] == 'completed' for body in outcome.values())} of {len(accepted)}")
        assert worker.poll() is None
        assert all(code == 503 for _, code in refused), refused  # a clean 503, never a 500 (or no answer)
        assert {job_id: body["status"] for job_id, body in outcome.items()} == dict.fromkeys(accepted, "completed")
        assert code == 200 and [w["name"] for w in json.loads(text)["workers"]], text
    finally:
        if submitter is not None:
            submitter.stopping.set()
            submitter.join(timeout=30)
        for process in (worker, api):
            if process is not None:
                stop_process(process)
        connection.close()


@pytest.mark.parametrize("cluster", [1], indirect=True)
def test_a_submit_no_replica_confirms_is_answered_503_with_its_job_id(cluster, sentinel_env, media_server):
    """The replica stopped (SIGSTOP): WAIT times out, the API says so (503 not_replicated) and names the
    job, which is queued on the master. Once the replica is back, the same Idempotency-Key gets 202."""
    env = {**sentinel_env, "REDIS_WAIT_TIMEOUT": "1"}
    headers = create_user(env, "wait@example.com")
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    api = start_api(api_port, env)
    replica = cluster.processes["replica-0"]
    try:
        replica.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        code, response_headers, body = submit(url, headers, media_server.url("fox.m4a"), **{"Idempotency-Key": "k1"})
        waited = time.monotonic() - started
        assert (code, body["error"]) == (503, "not_replicated") and response_headers["Retry-After"], body
        assert job_status(url, headers, body["job_id"])["status"] == "pending"  # queued on the master
        assert waited >= 1  # REDIS_WAIT_TIMEOUT

        code, _, text = http("POST", url + "/api/v1/transcribe/async/batch", headers,
                             {"videos": [{"youtube_url": media_server.url("fox.m4a")}] * 2})
        batch = json.loads(text)
        assert (code, batch["error"], len(batch["job_ids"])) == (503, "not_replicated", 2), batch
        assert batch["batch_id"]

        replica.send_signal(signal.SIGCONT)
        again_code, again_headers, again = submit(url, headers, media_server.url("fox.m4a"), **{"Idempotency-Key": "k1"})
        assert (again_code, again["job_id"], again_headers["Idempotent-Replayed"]) == (202, body["job_id"], "true")
    finally:
        replica.send_signal(signal.SIGCONT)
        stop_process(api)


@pytest.mark.parametrize("cluster", [1], indirect=True)
def test_work_the_replica_missed_is_done_again_after_a_failover(cluster, sentinel_env, media_server):
    """Asynchronous replication: what the worker wrote after the replica's last acknowledgement dies with
    the master. Here the replica is stopped while the worker completes two jobs, then the master is
    killed: on the promoted replica the jobs are queued again, and the same worker runs them again."""
    env = sentinel_env
    connection = connect(settings_of(env))
    headers = create_user(env, "redo@example.com")
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    replica = cluster.processes["replica-0"]
    api = worker = None
    try:
        api = start_api(api_port, env)
        videos = [media_server.url("fox.m4a", run=f"{cluster.master_port}-{number}") for number in range(2)]
        job_ids = [submit(url, headers, video)[2]["job_id"] for video in videos]
        # A stopped replica still receives what fits in its socket buffers, and reads it when continued:
        # more than fits (a few MB on loopback) keeps what follows in the master's output buffer.
        replica.send_signal(signal.SIGSTOP)
        connection.set("test:padding", b"x" * 48 * 2**20)
        worker = start_worker(connection, env=env)
        wait_for(lambda: ended(url, headers, job_ids), timeout=120, message="the jobs to complete on the master")
        assert [job_status(url, headers, job_id)["status"] for job_id in job_ids] == ["completed"] * 2
        downloads = [len(media_server.requests_for(video.split("/")[-1])) for video in videos]

        cluster.kill("master")
        replica.send_signal(signal.SIGCONT)
        killed_at = time.monotonic()
        wait_for(lambda: cluster.master_port_now() == cluster.replica_ports[0], timeout=120, interval=0.1,
                 message="the Sentinels to promote the replica")
        # Run again: each video downloaded a second time, and each job completed (again) on the new master.
        wait_for(lambda: [len(media_server.requests_for(video.split("/")[-1])) for video in videos]
                 == [2 * count for count in downloads] and ended(url, headers, job_ids), timeout=180, interval=0.5,
                 message="the jobs to run again on the new master")
        print(f"\nthe jobs the worker completed after the replica's last acknowledgement ran again and completed "
              f"{time.monotonic() - killed_at:.1f} s after the kill; workers registered on the new master: "
              f"{Worker.count(connection=connection)} (the worker registered after that acknowledgement too)")
        assert [job_status(url, headers, job_id)["status"] for job_id in job_ids] == ["completed"] * 2
        assert worker.poll() is None
    finally:
        replica.send_signal(signal.SIGCONT)
        for process in (worker, api):
            if process is not None:
                stop_process(process)
        connection.close()


def test_a_master_refusing_writes_for_want_of_replicas_answers_503(client, make_user, redis, media_server):
    """Redis's own guard (``min-replicas-to-write``) refuses writes with NOREPLICAS: a 503, not a 500."""
    _, headers = make_user("pro")
    redis.config_set("min-replicas-to-write", 1)
    try:
        response = client.post(SUBMIT, json={"youtube_url": media_server.url("fox.m4a")}, headers=headers)
    finally:
        redis.config_set("min-replicas-to-write", 0)
    assert (response.status_code, response.get_json()["error"]) == (503, "service_unavailable")
    assert response.headers["Retry-After"]
