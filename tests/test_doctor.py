"""``ytcaption doctor``: one line per check, a fix for each problem, exit 1 on a failure."""

import datetime
import re
import socket
import subprocess
import time

from app.core.redis_server import free_port
from app.core.settings import Settings
from tests.helpers import ytcaption_command
from workers.doctor import check_cookies, check_ytdlp_version, ytdlp_age_days

LINE = re.compile(r"^(ok|warn|fail)\s+(\S+)\s+\S")


def doctor(*args: str, env: dict | None = None) -> tuple[int, list[str]]:
    import os

    result = subprocess.run([ytcaption_command(), "doctor", *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    return result.returncode, result.stdout.splitlines()


def by_name(lines: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a doctor line: {line!r}"
        found.setdefault(match[2], []).append(line)
    return found


def test_a_working_machine_gets_no_failure(config):
    code, lines = doctor()
    checks = by_name(lines)
    assert code == 0, lines
    assert set(checks) >= {"redis", "model", "yt-dlp", "js-runtime", "ejs-solver", "ffmpeg", "cookies", "work-dir"}
    assert checks["redis"][0].startswith("ok") and "Redis " in checks["redis"][0]
    assert checks["model"][0].startswith("ok") and "tiny.en" in checks["model"][0]
    assert re.match(r"ok\s+js-runtime\s+deno \S*\d", checks["js-runtime"][0]), checks["js-runtime"]
    assert checks["ejs-solver"][0].startswith("ok")


def test_each_failure_is_a_line_with_its_fix_and_exit_status_1(config, tmp_path):
    cookies = tmp_path / "cookies.txt"
    expired = int(time.time()) - 86400
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       f".youtube.com\tTRUE\t/\tTRUE\t{expired}\tSID\tsecret-value\n")
    closed = free_port()  # nothing listens there
    code, lines = doctor("--no-model", env={
        "REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        "YTDLP_PROXIES": f"http://user:pass@127.0.0.1:{closed}",
        "YTDLP_COOKIES_FILE": str(cookies),
    })
    checks = by_name(lines)
    assert code == 1
    assert "model" not in checks
    for name in ("redis", "proxy", "cookies"):
        assert checks[name][0].startswith("fail") and "(fix: " in checks[name][0], checks[name]
    output = "\n".join(lines)
    assert "hunter2" not in output and "pass@" not in output and "secret-value" not in output


def test_yt_dlp_is_flagged_once_older_than_sixty_days():
    assert ytdlp_age_days("2025.11.12", datetime.date(2025, 11, 30)) == 18
    assert ytdlp_age_days("2025.11.12.232830", datetime.date(2026, 1, 12)) == 61
    assert ytdlp_age_days("unknown", datetime.date(2026, 1, 1)) is None
    from yt_dlp.version import __version__

    released = datetime.date(*(int(part) for part in __version__.split(".")[:3]))
    fresh, = check_ytdlp_version(None, today=released + datetime.timedelta(days=60))
    stale, = check_ytdlp_version(None, today=released + datetime.timedelta(days=61))
    assert fresh.status == "ok"
    assert stale.status == "warn" and "61 days old" in stale.detail and "pip install -U" in stale.fix


def test_cookies_some_expired_warn_all_current_pass(config, tmp_path, monkeypatch):
    now = int(time.time())
    cookies = tmp_path / "cookies.txt"
    monkeypatch.setenv("YTDLP_COOKIES_FILE", str(cookies))
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       f".youtube.com\tTRUE\t/\tTRUE\t{now + 86400 * 30}\tSID\ta\n"
                       f"#HttpOnly_.youtube.com\tTRUE\t/\tTRUE\t{now + 86400 * 60}\tHSID\tb\n")
    check, = check_cookies(Settings.load())
    assert check.status == "ok" and "2 youtube.com cookies" in check.detail
    cookies.write_text("# Netscape HTTP Cookie File\n"
                       f".youtube.com\tTRUE\t/\tTRUE\t{now - 60}\tSID\ta\n"
                       f".youtube.com\tTRUE\t/\tTRUE\t{now + 86400}\tHSID\tb\n")
    check, = check_cookies(Settings.load())
    assert check.status == "warn" and "1 of 2" in check.detail


def test_a_proxy_that_listens_is_reachable(config, monkeypatch):
    from workers.doctor import check_proxies

    with socket.create_server(("127.0.0.1", 0)) as listener:
        monkeypatch.setenv("YTDLP_PROXIES", f"http://127.0.0.1:{listener.getsockname()[1]}")
        check, = check_proxies(Settings.load())
    assert check.status == "ok" and "reachable" in check.detail


def test_a_setting_that_stops_every_process_is_the_one_failure_shown(config, tmp_path):
    code, lines = doctor("--no-model", env={"YTDLP_COOKIES_FILE": str(tmp_path / "missing.txt")})
    assert code == 1
    assert len(lines) == 1 and re.match(r"fail\s+settings\s+Setting YTDLP_COOKIES_FILE=", lines[0]), lines
    assert "(fix: " in lines[0]
