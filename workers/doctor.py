"""``ytcaption doctor``: is this machine ready to work, against real YouTube too?

Each check gives one line: ``ok``, ``warn`` (works, but something will bite) or ``fail`` (jobs will
fail), with what it found and, unless ok, the fix. ``ytcaption doctor`` prints them and exits 1 on
any fail; a worker logs the same lines when it starts (without loading a second model: its engine
host just loaded one).
"""

from __future__ import annotations

import datetime
import http.cookiejar
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.core.settings import Settings

log = logging.getLogger(__name__)

#: yt-dlp releases older than this many days are flagged: YouTube changes break old versions.
YTDLP_MAX_AGE_DAYS = 60
#: Below this free space in WORK_DIR, no job can download anything worth transcribing.
MIN_FREE_BYTES = 200 * 1024 * 1024
#: Seconds to wait for Redis or a proxy to answer.
TIMEOUT = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix and self.status != "ok" else ""
        return f"{self.status:<5} {self.name:<12} {self.detail}{fix}"


def run_checks(settings: Settings, *, model: bool = True) -> list[Check]:
    """Every check, in order; ``model=False`` skips loading the model."""
    checks: list[Callable[[Settings], Iterator[Check]]] = [check_redis]
    if model:
        checks.append(check_model)
    checks += [check_cpu, check_ytdlp_version, check_js_runtime, check_extractor_args, check_ffmpeg, check_cookies,
               check_proxies, check_work_dir]
    results = []
    for check in checks:
        try:
            results.extend(check(settings))
        except Exception as exc:  # a check that breaks is a failed check, not a crashed doctor
            results.append(Check(check.__name__.removeprefix("check_"), "fail", f"the check raised {exc!r}"))
    return results


def log_summary(settings: Settings) -> None:
    """Log the checks (but the model's) as a worker starts: warnings and failures at their level."""
    for check in run_checks(settings, model=False):
        level = {"ok": logging.INFO, "warn": logging.WARNING}.get(check.status, logging.ERROR)
        log.log(level, "doctor: %s", check.line())


def check_redis(settings: Settings) -> Iterator[Check]:
    from app.core.services import connect

    where = ", ".join(settings.redis_sentinels) if settings.redis_sentinels else _without_password(
        settings.effective_redis_url)
    try:
        connection = connect(settings)
        version = connection.info("server").get("redis_version", "?")
    except Exception as exc:
        yield Check("redis", "fail", f"{where} unreachable: {exc}",
                    "start Redis (`ytcaption up` runs one in DATA_DIR, a directory relative to where it was "
                    "started: run the doctor there), or set REDIS_URL (or REDIS_SENTINELS)")
        return
    yield Check("redis", "ok", f"Redis {version} at {where}")


def check_model(settings: Settings) -> Iterator[Check]:
    from workers.engines import create_engine

    name = settings.default_model_name
    try:
        _, seconds = create_engine(settings).load(name)
    except Exception as exc:
        yield Check("model", "fail", f"{name} ({settings.whisper_engine}) does not load: {exc}",
                    "set WHISPER_MODEL to a model this machine has (the bundled tiny.en works offline)")
        return
    yield Check("model", "ok", f"{name} ({settings.whisper_engine}) loads in {seconds:.1f} s")


def check_cpu(settings: Settings) -> Iterator[Check]:
    """The threads a transcription gets: ``WHISPER_CPU_THREADS``, or the usable cores ÷ the workers sharing them."""
    from redis.exceptions import RedisError

    from app.core.services import connect
    from workers.cpu_share import CpuPool, cpu_quota, usable_cores
    from workers.engines import cpu_threads

    cores, quota = usable_cores(), cpu_quota()
    usable = f"{_count(cores, 'usable core')}" + (f" (CPU quota {quota:g})" if quota is not None else "")
    try:
        workers: int | None = CpuPool.count(connect(settings))
    except RedisError:
        workers = None
    if workers is None:
        counted, divisor = "workers not counted: Redis unreachable", 1
    elif workers == 0:
        counted, divisor = "no worker running", 1
    else:
        counted, divisor = f"{_count(workers, 'worker')} sharing them", workers
    threads = _count(cpu_threads(settings, divisor), "thread")
    if not settings.whisper_cpu_threads:
        yield Check("cpu", "ok", f"{threads} per transcription (auto): {usable} ÷ {divisor} ({counted})")
    elif settings.whisper_cpu_threads * divisor > cores:
        yield Check("cpu", "warn", f"{threads} per transcription (WHISPER_CPU_THREADS) × {_count(divisor, 'worker')}: "
                                   f"more than the {usable}",
                    "WHISPER_CPU_THREADS=0: each worker gets the usable cores ÷ workers")
    else:
        yield Check("cpu", "ok", f"{threads} per transcription (WHISPER_CPU_THREADS); {usable}, {counted}")


def check_ytdlp_version(settings: Settings, today: datetime.date | None = None) -> Iterator[Check]:
    from yt_dlp.version import __version__

    age = ytdlp_age_days(__version__, today or datetime.date.today())
    fix = "pip install -U 'yt-dlp[default]' and restart the workers"
    if age is None:
        yield Check("yt-dlp", "warn", f"{__version__}: not a dated release, its age is unknown", fix)
    elif age > YTDLP_MAX_AGE_DAYS:
        yield Check("yt-dlp", "warn", f"{__version__} is {age} days old; YouTube breaks old versions", fix)
    else:
        yield Check("yt-dlp", "ok", f"{__version__} ({age} days old)")


def ytdlp_age_days(version: str, today: datetime.date) -> int | None:
    """Days since a yt-dlp release (its version is its date: ``2025.11.12``, ``2025.11.12.232830``)."""
    try:
        year, month, day = (int(part) for part in version.split(".")[:3])
        return (today - datetime.date(year, month, day)).days
    except ValueError:
        return None


def check_js_runtime(settings: Settings) -> Iterator[Check]:
    from app.core.errors import ConfigurationError
    from workers.ytdlp import ejs_solver_version, js_runtime

    try:
        runtime = js_runtime(settings)
    except ConfigurationError as exc:
        yield Check("js-runtime", "fail", exc.message, "correct YTDLP_JS_RUNTIME, or unset it for the bundled Deno")
    else:
        if runtime is None:
            yield Check("js-runtime", "warn", "none (YTDLP_JS_RUNTIME=none): some YouTube formats will be missing",
                        "unset YTDLP_JS_RUNTIME to use the bundled Deno")
        else:
            name, path = runtime
            version = _first_line([path, "--version"]).removeprefix(name).split(" (")[0].strip()
            yield Check("js-runtime", "ok", f"{name} {version} at {path}")
    solver = ejs_solver_version()
    if solver is None:
        yield Check("ejs-solver", "fail", "yt-dlp's EJS challenge solver scripts (yt-dlp-ejs) are not installed",
                    "pip install 'yt-dlp[default]'")
    else:
        yield Check("ejs-solver", "ok", f"yt-dlp-ejs {solver}")


def check_extractor_args(settings: Settings) -> Iterator[Check]:
    from app.core.errors import ConfigurationError
    from workers.ytdlp import extractor_args

    if not settings.ytdlp_extractor_args:
        return
    try:
        parsed = extractor_args(settings)
    except ConfigurationError as exc:
        yield Check("extractor", "fail", exc.message, "correct YTDLP_EXTRACTOR_ARGS (yt-dlp's --extractor-args format)")
        return
    yield Check("extractor", "ok", "arguments for " + ", ".join(sorted(parsed)))


def check_ffmpeg(settings: Settings) -> Iterator[Check]:
    path = shutil.which("ffmpeg")
    if path is None:
        yield Check("ffmpeg", "warn", "not found: yt-dlp cannot download some streams (HLS with keys, DASH)",
                    "install ffmpeg (Debian: apt-get install ffmpeg)")
    else:
        yield Check("ffmpeg", "ok", _first_line([path, "-version"]).removeprefix("ffmpeg version ").split(" ")[0])


def check_cookies(settings: Settings) -> Iterator[Check]:
    path: Path | None = settings.ytdlp_cookies_file
    if path is None:
        yield Check("cookies", "ok", "none (YTDLP_COOKIES_FILE unset; set it if YouTube asks to sign in)")
        return
    jar = http.cookiejar.MozillaCookieJar()
    try:
        jar.load(str(path), ignore_discard=True, ignore_expires=True)
    except (OSError, http.cookiejar.LoadError) as exc:
        yield Check("cookies", "fail", f"{path} cannot be read as a Netscape cookie file: {exc}",
                    "export the cookies again (docs: Running against real YouTube)")
        return
    now = time.time()
    youtube = [cookie for cookie in jar if cookie.domain.lstrip(".").endswith("youtube.com")]
    expired = [cookie for cookie in youtube if cookie.expires and cookie.expires < now]
    if not youtube:
        yield Check("cookies", "warn", f"{path}: {len(jar)} cookies, none for youtube.com",
                    "export the cookies of a signed-in youtube.com browser session")
    elif len(expired) == len(youtube):
        which = "its youtube.com cookie has" if len(youtube) == 1 else f"all {len(youtube)} youtube.com cookies have"
        yield Check("cookies", "fail", f"{path}: {which} expired",
                    "export fresh cookies from a signed-in browser session")
    elif expired:
        yield Check("cookies", "warn", f"{path}: {len(expired)} of {len(youtube)} youtube.com cookies have expired",
                    "export fresh cookies from a signed-in browser session")
    else:
        soonest = min((cookie.expires for cookie in youtube if cookie.expires), default=None)
        until = f", the first expires {_date(soonest)}" if soonest else ""
        yield Check("cookies", "ok", f"{path}: {len(youtube)} youtube.com cookies{until}")


def check_proxies(settings: Settings) -> Iterator[Check]:
    for proxy in settings.proxies:
        try:
            socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT).close()
        except OSError as exc:
            yield Check("proxy", "fail", f"{proxy.label} unreachable: {exc.strerror or exc}",
                        "check YTDLP_PROXIES (and the proxy's firewall)")
        else:
            yield Check("proxy", "ok", f"{proxy.label} reachable")


def check_work_dir(settings: Settings) -> Iterator[Check]:
    directory = settings.work_dir
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    free = shutil.disk_usage(existing).free
    fix = "free disk space, or point WORK_DIR at a larger disk"
    if free < MIN_FREE_BYTES:
        yield Check("work-dir", "fail", f"{directory}: {_size(free)} free", fix)
    elif free < settings.max_download_bytes:
        yield Check("work-dir", "warn", f"{directory}: {_size(free)} free, less than MAX_DOWNLOAD_BYTES "
                    f"({_size(settings.max_download_bytes)})", fix)
    else:
        yield Check("work-dir", "ok", f"{directory}: {_size(free)} free")


def _first_line(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(cannot run: {exc})"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" + ("" if number == 1 else "s")


def _size(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def _date(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).date().isoformat()
