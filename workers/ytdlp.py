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
- **Start-up once per worker.** ``JobYoutubeDL`` is a job's ``YoutubeDL``, built from what
  ``prepare`` did once in the worker before it forked (yt-dlp's choice of extractors, their URL
  patterns compiled, one SSL context); ``choose_extractor`` finds the one for a job's URL before
  the horse is forked: a work horse's download pays for none of it.
"""

from __future__ import annotations

import collections
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
from yt_dlp import YoutubeDL

from app.core import settings as settings_module
from app.core.errors import ConfigurationError
from app.core.proxies import EGRESS_SCHEMES, Proxy
from app.core.settings import Settings

log = logging.getLogger(__name__)

#: Counter of the jobs that took a proxy: a job starts at proxy number (counter mod proxies).
ROTATION_KEY = "ytcaption:proxy_rotation"
#: The copy of YTDLP_COOKIES_FILE in a job's directory.
COOKIE_COPY = "cookies.txt"
#: URLs of both kinds a job brings, for ``prepare`` to compile every extractor's URL patterns: some
#: extractors look at their own pattern only for URLs of one kind (YouTube's tab and playlist
#: extractors skip theirs, the largest, for a YouTube video's URL).
WARM_UP_URLS = ("https://www.youtube.com/watch?v=aaaaaaaaaaa", "http://127.0.0.1:8000/media.webm")


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


class JobYoutubeDL(YoutubeDL):
    """yt-dlp's ``YoutubeDL`` as a job runs it: with yt-dlp's default extractors, as ``YoutubeDL(options)``
    has, without the work of choosing them, nor of printing what nobody asked for.

    With ``_default_extractors`` and ``_share_ssl_contexts``, the only code that reaches into
    yt-dlp's internals; each place says why.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        # yt-dlp's auto_init chooses the extractors among all ~1,900 on every construction (0.1 s
        # here, in every job): they are the choice it made once in this process instead
        # (``_default_extractors``). Not by adding each of ~1,750 classes to a dict of the job's own:
        # that writes to every class (its reference count), and a forked work horse copies each
        # memory page it writes to (0.01 s and more). Its private dict of extractors becomes a layer
        # of its own (where the instances it makes go) over the process's, which is never written.
        super().__init__(options, auto_init=False)
        self._ies = collections.ChainMap({}, _default_extractors())

    # Why: at each of nine steps of a download, yt-dlp renders for ``--print`` the tables of formats,
    # thumbnails and subtitles and the file's name, even with nothing to print (0.01 s of a loopback
    # job). A job's options print nothing; with any printing option set, yt-dlp's own runs.
    def _forceprint(self, key: str, info_dict: dict[str, Any] | None) -> dict[str, Any] | None:
        if any(value for name, value in self.params.items() if name.startswith(("force", "print"))):
            return super()._forceprint(key, info_dict)
        return None if info_dict is None else dict(info_dict)


@functools.cache
def _default_extractors() -> dict[str, type]:
    """The extractors yt-dlp's own ``add_default_info_extractors`` chooses, by key, in its order (classes:
    each ``YoutubeDL`` makes its own instances of those it uses)."""
    with YoutubeDL({"quiet": True, "no_warnings": True}) as ydl:
        return dict(ydl._ies)  # yt-dlp's private dict: read once, never written


def prepare() -> None:
    """Prepare this process's later ``YoutubeDL``s (``workers.download.warm_up``, before the worker forks).

    yt-dlp's extractors are chosen once (``JobYoutubeDL``), and every extractor's URL patterns
    compiled: yt-dlp compiles them on first use, trying each extractor in turn (~1,900) to find
    the one for a URL. SSL contexts are shared (``_share_ssl_contexts``).
    """
    _share_ssl_contexts()
    extractors = _default_extractors().values()
    for url in WARM_UP_URLS:
        for extractor in extractors:
            extractor.suitable(url)


def choose_extractor(url: str | None) -> None:
    """Find, in the worker before it forks a job's work horse, the extractor yt-dlp would take for the
    job's ``url`` (the first suitable one), for the horse to ask ``extractor_for``.

    Searching means trying ~1,750 extractors in turn, which touches each one's class and URL
    patterns: 0.03 s in a horse, which copies every memory page it writes to, a few ms here.
    """
    global _chosen
    extractors = _default_extractors().items()
    _chosen = (url, next((key for key, extractor in extractors if extractor.suitable(url)), None)) if url else None


def extractor_for(url: str) -> str | None:
    """The extractor ``choose_extractor`` found for ``url`` (yt-dlp's ``ie_key``); None: not chosen, yt-dlp searches."""
    return _chosen[1] if _chosen is not None and _chosen[0] == url else None


#: The URL of the job about to run and its extractor (``choose_extractor``).
_chosen: tuple[str, str | None] | None = None


def _share_ssl_contexts() -> None:
    """Build each kind of SSL context yt-dlp asks for once per process, not once per ``YoutubeDL``.

    Every ``YoutubeDL`` builds its own, loading certifi's ~150 CA certificates (0.04 s here, for
    every job, even one that never opens a TLS connection). yt-dlp takes no context from outside;
    it only reads the ones it builds (its ``requests`` adapter leaves verification to the context,
    urllib3 sets on it the verify mode it was built with), so one per set of arguments serves all.
    """
    from yt_dlp.networking import common

    if not hasattr(common.make_ssl_context, "cache_info"):
        # Replaces a function of yt-dlp's internals, the one its request handlers build contexts with.
        common.make_ssl_context = functools.lru_cache(maxsize=8)(common.make_ssl_context)


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
