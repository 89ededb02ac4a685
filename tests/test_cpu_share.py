"""A worker's share of the CPU (workers/cpu_share.py): with ``WHISPER_CPU_THREADS=0``, each worker's
transcriptions get the usable cores ÷ the workers sharing them, and follow workers that come and go."""

from __future__ import annotations

import re
import subprocess

import pytest

from app.core.settings import Settings
from tests.helpers import start_worker, stop_process, wait_for, ytcaption_command
from workers import cpu_share
from workers.cpu_share import CpuPool, cpu_quota, pool_name, threads_per_worker, usable_cores
from workers.engine_host import EngineHost


@pytest.mark.parametrize("cores, workers, threads", [
    (2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 3, 2), (16, 4, 4), (1, 0, 1), (4, 0, 4),
])
def test_each_worker_gets_an_equal_share_of_the_cores_and_at_least_one_thread(cores, workers, threads):
    assert threads_per_worker(cores, workers) == threads


@pytest.mark.parametrize("files, quota", [
    ({}, None),  # no cgroup file system (not Linux, or not mounted)
    ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no quota
    ({"cpu.max": "150000 100000\n"}, 1.5),  # docker run --cpus 1.5
    ({"cpu.max": "200000 50000\n"}, 4.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # cgroup v1, no quota
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
])
def test_the_cpu_quota_is_read_from_cgroup_v2_or_v1(tmp_path, files, quota):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert cpu_quota(tmp_path) == quota


@pytest.mark.parametrize("cpu_max, cores", [
    ("max 100000", "all"), ("100000 100000", 1), ("150000 100000", 1), ("50000 100000", 1), ("999900000 100000", "all"),
])
def test_usable_cores_are_those_the_process_may_run_on_within_its_quota_rounded_down(tmp_path, cpu_max, cores):
    import os

    (tmp_path / "cpu.max").write_text(cpu_max)
    assert usable_cores(tmp_path) == (len(os.sched_getaffinity(0)) if cores == "all" else cores)


def test_a_container_with_a_quota_of_its_own_is_a_pool_of_its_own(tmp_path):
    import socket

    assert pool_name(tmp_path) == cpu_share.BOOT_ID.read_text().strip()
    (tmp_path / "cpu.max").write_text("200000 100000")
    assert pool_name(tmp_path) == f"{cpu_share.BOOT_ID.read_text().strip()}/{socket.gethostname()}"


def test_workers_of_a_pool_count_each_other_until_they_leave_or_expire(redis):
    first, second = CpuPool(redis, "first", pool="p"), CpuPool(redis, "second", pool="p")
    elsewhere = CpuPool(redis, "elsewhere", pool="another machine")
    assert first.workers() == 1
    assert second.workers() == 2 and elsewhere.workers() == 1
    assert first.workers() == 2 and CpuPool.count(redis, "p") == 2
    second.leave()
    assert first.workers() == 1
    CpuPool(redis, "killed", pool="p", ttl=-1).workers()  # a registration its worker never renewed
    assert first.workers() == 1 and CpuPool.count(redis, "p") == 1


def test_the_engine_host_starts_again_with_the_new_share_when_workers_come_and_go(redis, monkeypatch):
    monkeypatch.setattr(cpu_share, "usable_cores", lambda: 4)
    this = CpuPool(redis, "this", pool="p")
    host = EngineHost(Settings.load(), pool=this)
    try:
        host.start()
        assert host.threads == 4
        first_process = host.process.pid
        assert not host.follow_cpu_share()

        other = CpuPool(redis, "other", pool="p")
        other.workers()
        assert host.follow_cpu_share()
        assert host.threads == 2 and host.process.pid != first_process and host.client.ping()
        assert not host.follow_cpu_share()

        other.leave()
        assert host.follow_cpu_share() and host.threads == 4
    finally:
        host.stop()


def test_a_set_thread_count_is_kept_whoever_shares_the_cores(redis, monkeypatch):
    monkeypatch.setattr(cpu_share, "usable_cores", lambda: 4)
    CpuPool(redis, "other", pool="p").workers()
    host = EngineHost(Settings.load({"WHISPER_CPU_THREADS": "3"}), pool=CpuPool(redis, "this", pool="p"))
    try:
        host.start()
        assert host.threads == 3 and not host.follow_cpu_share()
    finally:
        host.stop()


@pytest.mark.skipif(usable_cores() < 2, reason="one core: every share is one thread")
def test_a_running_worker_follows_a_worker_that_joins_and_leaves_its_machine(config, redis, tmp_path):
    log = tmp_path / "worker.log"
    cores = usable_cores()
    with log.open("w") as output:
        process = start_worker(redis, stderr=output)
    try:
        assert f"{cores} CPU threads per transcription" in log.read_text()
        other = CpuPool(redis, "another-worker")  # this machine's pool, as a second worker would join it
        other.workers()
        halved = threads_per_worker(cores, 2)
        wait_for(lambda: f"restarting the engine host with {halved} CPU thread" in log.read_text(), timeout=90,
                 message="the worker to restart its engine host with half the cores")
        other.leave()
        wait_for(lambda: f"with {cores} CPU threads per transcription instead of {halved}" in log.read_text(),
                 timeout=90, message="the worker to take the whole machine again")
    finally:
        stop_process(process)


def test_the_doctor_says_how_many_threads_a_transcription_gets(config, redis):
    cores = usable_cores()
    for name in ("first", "second"):
        CpuPool(redis, name).workers()
    result = subprocess.run([ytcaption_command(), "doctor", "--no-model"], capture_output=True, text=True, timeout=120)
    line = next(line for line in result.stdout.splitlines() if re.match(r"\w+\s+cpu\s", line))
    expected = threads_per_worker(cores, 2)
    assert re.match(rf"ok\s+cpu\s+{expected} threads? per transcription \(auto\): {cores} usable cores? ÷ 2 "
                    r"\(2 workers sharing them\)", line), line
