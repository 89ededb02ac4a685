"""yt-dlp as the worker runs it: every option a job gives yt-dlp is built here, from the settings.

- **JavaScript runtime.** YouTube's player hides its formats behind signature and "n" challenges
  that yt-dlp (2025.11 and later) solves by running the EJS solver scripts (package
  ``yt-dlp-ejs``) in a JavaScript runtime; without one, most formats are missing. yt-dlp is
  given the runtime's path (``YTDLP_JS_RUNTIME``; by default the Deno binary of the ``deno``
  package), so it does not depend on what is on ``PATH``. Remote components stay off: the
  solver never comes from the network.
- **Cookies.** yt-dlp saves its cookie jar back to the file it loaded when it is done: it gets a
  copy of ``YTDLP_COOKIES_FILE`` in the job's own directory (removed with it), never the file.
- **Proxies.** ``YTDLP_PROXIES`` in turn: ``proxy_order`` starts each job at the next one (a
  counter in Redis, shared by every worker), the download tries the next one after a proxy
  failure or a bot check (``workers.download``).
- **Extractor arguments.** ``YTDLP_EXTRACTOR_ARGS`` is parsed by yt-dlp's own ``--extractor-args``
  parser, and checked when the worker starts (``check``).
"""

from __future__ import annotations

import functools
import logging
import optparse
import os
import random
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from redis import Redis

from app.core import settings as settings_module
from app.core.errors import ConfigurationError
from app.core.proxies import EGRESS_SCHEMES, Proxy
from app.core.settings import Settings

log = logging.getLogger(__name__)

#: Counter of the jobs that took a proxy: a job starts at proxy number (counter mod proxies).
ROTATION_KEY = "ytcaption:proxy_rotation"
#: The copy of YTDLP_COOKIES_FILE in a job's directory.
COOKIE_COPY = "cookies.txt"


def js_runtime(settings: Settings) -> tuple[str, str] | None:
    """The JavaScript runtime yt-dlp uses, as ``(name, path of its program)``; None with ``YTDLP_JS_RUNTIME=none``."""
    try:
        return settings_module.js_runtime(settings.ytdlp_js_runtime)
    except ValueError as exc:  # the program went away since start-up
        raise ConfigurationError(f"Setting YTDLP_JS_RUNTIME={settings.ytdlp_js_runtime!r} is invalid: {exc}.") from None


def ejs_solver_version() -> str | None:
    """The version of the EJS challenge-solver scripts yt-dlp will run, None if it has none it accepts.

    yt-dlp takes them from the ``yt-dlp-ejs`` package only if its major.minor version is the one
    that yt-dlp release expects (``extractor/youtube/jsc/_builtin/ejs.py``); otherwise it would
    need to fetch them from the network, which ytcaption does not allow.
    """
    from yt_dlp.dependencies import yt_dlp_ejs
    from yt_dlp.utils import version_tuple

    if yt_dlp_ejs is None:
        return None
    version = yt_dlp_ejs.version
    try:
        from yt_dlp.extractor.youtube.jsc._builtin.vendor import VERSION as expected
    except ImportError:  # a yt-dlp without this check: it takes the package as it is
        return version
    if version_tuple(version, lenient=True)[:2] != version_tuple(expected, lenient=True)[:2]:
        return None
    return version


@functools.lru_cache(maxsize=8)
def _parse_extractor_args(value: str) -> dict[str, dict[str, list[str]]]:
    from yt_dlp.options import create_parser

    parser = create_parser()
    option = parser.get_option("--extractor-args")
    values = parser.values = parser.get_default_values()  # the option's callback reads and writes parser.values
    for group in value.split():  # each group is what one --extractor-args would be given
        try:
            option.process("--extractor-args", group, values, parser)
        except optparse.OptionValueError as exc:
            raise ConfigurationError(f"Setting YTDLP_EXTRACTOR_ARGS is invalid: {exc}.") from None
    return values.extractor_args


def extractor_args(settings: Settings) -> dict[str, dict[str, list[str]]]:
    """``YTDLP_EXTRACTOR_ARGS`` as yt-dlp's ``extractor_args`` option, parsed by yt-dlp's own CLI parser."""
    if not settings.ytdlp_extractor_args:
        return {}
    # A copy: yt-dlp may change the dict it is given, and the parse is cached.
    return {ie: {key: list(values) for key, values in args.items()}
            for ie, args in _parse_extractor_args(settings.ytdlp_extractor_args.strip()).items()}


def check(settings: Settings) -> None:
    """Check at the worker's start what only the worker side can: ``ConfigurationError`` if wrong."""
    extractor_args(settings)
    js_runtime(settings)
    if settings.proxies and settings.allowed_url_hosts and not egress_proxies(settings):
        log.warning("YTDLP_PROXIES has no http:// proxy: downloads from ALLOWED_URL_HOSTS go out directly "
                    "(only http:// proxies can carry them; docs/operations.md#youtube)")


def egress_proxies(settings: Settings) -> tuple[Proxy, ...]:
    """The proxies a non-YouTube download can go through: the egress proxy forwards by ``CONNECT`` over HTTP."""
    return tuple(proxy for proxy in settings.proxies if proxy.scheme in EGRESS_SCHEMES)


def proxy_order(proxies: Sequence[Proxy], connection: Redis | None) -> list[Proxy]:
    """``proxies``, starting at the next one in turn: jobs started one after the other, on any worker,
    start at different proxies. Without Redis (a download outside a job), a random start."""
    if not proxies:
        return []
    start = connection.incr(ROTATION_KEY) - 1 if connection is not None else random.randrange(len(proxies))
    start %= len(proxies)
    return [*proxies[start:], *proxies[:start]]


def job_cookie_file(settings: Settings, directory: Path) -> Path | None:
    """A copy of ``YTDLP_COOKIES_FILE`` in the job's directory, for yt-dlp to load and rewrite."""
    if settings.ytdlp_cookies_file is None:
        return None
    copy = directory / COOKIE_COPY
    shutil.copyfile(settings.ytdlp_cookies_file, copy)
    os.chmod(copy, 0o600)  # the session of an account
    return copy


def ytdlp_options(settings: Settings, *, directory: Path, proxy: str | None = None, cookie_file: Path | None = None,
                  progress_hooks: Iterable[Callable[[dict[str, Any]], None]] = (),
                  logger: logging.Logger | None = None) -> dict[str, Any]:
    """The options of the ``YoutubeDL`` that downloads one job's media into ``directory``.

    Args:
        proxy: the URL yt-dlp sends every request to (one of ``YTDLP_PROXIES``, or the job's egress proxy).
        cookie_file: the job's copy of the cookies (``job_cookie_file``).
    """
    runtime = js_runtime(settings)
    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "outtmpl": {"default": "media.%(ext)s"},
        "paths": {"home": str(directory), "temp": str(directory)},
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "no_color": True,
        "cachedir": False,
        "logger": _Scrubbed(logger or log, settings.proxies),
        "progress_hooks": list(progress_hooks),
        "socket_timeout": 30,
        # Job-level retries decide whether to try again; yt-dlp retries only brief hiccups.
        "retries": 2,
        "extractor_retries": 1,
        "overwrites": True,
        # An explicit path: yt-dlp would otherwise look for the program on PATH (and next to its interpreter).
        "js_runtimes": {runtime[0]: {"path": runtime[1]}} if runtime else {},
        "remote_components": [],  # the solver scripts come from the yt-dlp-ejs package, never from the network
        "extractor_args": extractor_args(settings),
    }
    if proxy is not None:
        options["proxy"] = proxy
    if cookie_file is not None:
        options["cookiefile"] = str(cookie_file)
    return options


class _Scrubbed:
    """yt-dlp's logger, with the credentials of every proxy cut out of what it says (an error message may
    quote a proxy URL): a proxy is named by its label (``scheme://host:port``)."""

    def __init__(self, logger: logging.Logger, proxies: Sequence[Proxy]) -> None:
        self.logger = logger
        self.replacements = [(proxy.url, proxy.label) for proxy in proxies if proxy.url != proxy.label]
        self.replacements += [(proxy.password, "********") for proxy in proxies if proxy.password]

    def _scrub(self, message: str) -> str:
        for secret, shown in self.replacements:
            message = message.replace(secret, shown)
        return message

    def debug(self, message: str) -> None:
        self.logger.debug(self._scrub(message))

    def info(self, message: str) -> None:
        self.logger.info(self._scrub(message))

    def warning(self, message: str) -> None:
        self.logger.warning(self._scrub(message))

    def error(self, message: str) -> None:
        self.logger.error(self._scrub(message))
