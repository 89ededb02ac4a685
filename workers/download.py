"""Download the audio of one video with yt-dlp, and map yt-dlp's errors to ytcaption's."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from yt_dlp import YoutubeDL
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, UnsupportedError

from app.core import stats
from app.core.errors import (
    FileTooLarge,
    JobError,
    RedirectNotAllowed,
    TransientDownloadError,
    UnsupportedURL,
    VideoTooLong,
    VideoUnavailable,
    YouTubeBotCheck,
)
from app.core.proxies import Proxy
from app.core.settings import Settings
from app.core.urls import YOUTUBE_HOSTS
from workers import ytdlp
from workers.egress import EgressProxy

log = logging.getLogger(__name__)

# Phrases YouTube uses for videos that will never download, whatever we retry.
_GONE = (
    "video unavailable",
    "private video",
    "has been removed",
    "is not available",
    "no longer available",
    "members-only",
    "sign in to confirm your age",
    "account associated with this video has been terminated",
    "copyright",
)


@dataclass(frozen=True)
class Media:
    path: Path
    title: str | None
    duration: float | None  # from the metadata; None when the site does not say


def fetch_audio(
    url: str,
    directory: Path,
    settings: Settings,
    *,
    max_duration: int,
    connection: Redis | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_duration: Callable[[float], None] | None = None,
) -> Media:
    """Download the best audio of ``url`` into ``directory``, through ``YTDLP_PROXIES`` if set.

    The duration and size in the metadata are checked (the duration passed to ``on_duration``)
    before anything is downloaded, and the size again while downloading. A URL on an allowed
    non-YouTube host is downloaded through an ``EgressProxy``: every request, whoever makes it
    (yt-dlp, each redirect hop, ffmpeg), passes the URL policy before it is sent.

    With proxies, the download starts at the next one in turn (``connection``: the Redis that
    keeps the turn and the per-proxy counters) and tries the following ones, each once, after a
    proxy failure or a YouTube bot check.

    Raises:
        VideoTooLong, FileTooLarge, VideoUnavailable, UnsupportedURL, RedirectNotAllowed,
        YouTubeBotCheck, TransientDownloadError.
    """
    # YouTube's extractor fetches from Google's hosts (googlevideo.com, ...): those are not checked.
    youtube = urlsplit(url).hostname in YOUTUBE_HOSTS
    proxies = ytdlp.proxy_order(settings.proxies if youtube else ytdlp.egress_proxies(settings), connection)
    cookie_file = ytdlp.job_cookie_file(settings, directory)

    def attempt(proxy: Proxy | None) -> Media:
        if youtube:
            return _download(url, directory, settings, None, proxy.url if proxy else None, cookie_file,
                             max_duration=max_duration, on_progress=on_progress, on_duration=on_duration)
        with EgressProxy(settings.allowed_url_hosts, max_bytes=settings.max_download_bytes, upstream=proxy) as egress:
            return _download(url, directory, settings, egress, egress.url, cookie_file,
                             max_duration=max_duration, on_progress=on_progress, on_duration=on_duration)

    if not proxies:
        return attempt(None)
    failures: list[tuple[Proxy, ProxyFailed | YouTubeBotCheck]] = []
    for proxy in proxies:
        try:
            media = attempt(proxy)
        except (ProxyFailed, YouTubeBotCheck) as exc:
            outcome = "bot_check" if isinstance(exc, YouTubeBotCheck) else "proxy_error"
            _count(connection, proxy, outcome)
            log.warning("the download failed through a proxy; trying the next one",
                        extra={"proxy": proxy.label, "outcome": outcome})
            failures.append((proxy, exc))
            continue
        _count(connection, proxy, "success")
        return media
    if all(isinstance(exc, YouTubeBotCheck) for _, exc in failures):
        raise failures[-1][1]
    tried = "; ".join(f"{proxy.label}: {exc.reason if isinstance(exc, ProxyFailed) else 'YouTube bot check'}"
                      for proxy, exc in failures)
    raise TransientDownloadError(f"The download failed through every proxy ({tried}).")


class ProxyFailed(Exception):
    """The proxy refused, reset or timed out the connection, or answered 407 or 5xx: the next proxy may work.

    Raised only with proxies, and always caught by ``fetch_audio`` (not a ``JobError``: a job never
    ends with it, and ``job_error`` must not rebuild one from its code).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason  # a few words, never the proxy's URL (which may hold its password)
        super().__init__(f"The proxy failed: {reason}.")


def _count(connection: Redis | None, proxy: Proxy, outcome: str) -> None:
    if connection is not None:
        stats.record_proxy_download(connection, proxy.label, outcome)


def _download(url: str, directory: Path, settings: Settings, egress: EgressProxy | None, proxy_url: str | None,
              cookie_file: Path | None, *, max_duration: int, on_progress: Callable[[float], None] | None,
              on_duration: Callable[[float], None] | None) -> Media:
    max_bytes = settings.max_download_bytes

    def hook(status: dict[str, Any]) -> None:
        if status.get("status") != "downloading":
            return
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        _check_size(max(total or 0, status.get("downloaded_bytes") or 0), max_bytes)
        if on_progress and total:
            on_progress(min(1.0, status.get("downloaded_bytes", 0) / total))

    options = ytdlp.ytdlp_options(settings, directory=directory, proxy=proxy_url, cookie_file=cookie_file,
                                  progress_hooks=[hook], logger=log)
    with _mapped_errors(egress, proxy_url is not None), YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=False)
        if info.get("_type") in ("playlist", "multi_video"):
            raise UnsupportedURL("The URL points to a list of videos, not to one video.")
        if info.get("is_live"):
            raise UnsupportedURL("Live streams cannot be transcribed; submit the video once the stream has ended.")
        duration = info.get("duration")
        if duration and duration > max_duration:
            raise VideoTooLong(f"The video lasts {duration:.0f} s; the limit is {max_duration} s.")
        _check_size(sum(f.get("filesize") or f.get("filesize_approx") or 0
                        for f in info.get("requested_formats") or [info]), max_bytes)
        if duration and on_duration:
            on_duration(float(duration))
        info = ydl.process_ie_result(info, download=True)
        if egress is not None and egress.too_large:  # cut by the proxy: to the downloader, a body that ended
            raise FileTooLarge(_too_large(egress.max_bytes))
        downloads = info.get("requested_downloads") or []
        if not downloads or not Path(downloads[0]["filepath"]).exists():
            raise UnsupportedURL("yt-dlp found no media file to download at this URL.")
        _check_size(Path(downloads[0]["filepath"]).stat().st_size, max_bytes)
        return Media(path=Path(downloads[0]["filepath"]), title=info.get("title"), duration=duration)


def _check_size(size: float, max_bytes: int) -> None:
    if size > max_bytes:
        raise FileTooLarge(_too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    limit = (f"{max_bytes / 1e9:g} GB" if max_bytes >= 1e9 else f"{max_bytes / 1e6:g} MB" if max_bytes >= 1e6
             else f"{max_bytes:,} bytes")
    return f"The media is larger than {limit}, the most this server downloads."


def warm_up() -> None:
    """Do once, in the worker before it forks, what each work horse would otherwise redo.

    yt-dlp compiles the URL patterns of its ~1,800 extractors to find the one for a URL, and
    imports that extractor, on first use in a process: about 0.7 s measured here, paid by every
    forked horse. Done in the parent, the horses inherit the compiled patterns.
    """
    from yt_dlp.extractor import gen_extractor_classes

    for extractor in gen_extractor_classes():
        extractor.suitable("https://www.youtube.com/watch?v=aaaaaaaaaaa")
    with YoutubeDL({"quiet": True, "no_warnings": True}) as ydl:
        for key in ("Youtube", "Generic"):
            ydl.get_info_extractor(key)


@contextmanager
def _mapped_errors(proxy: EgressProxy | None, proxied: bool = False) -> Iterator[None]:
    """Turn yt-dlp's exceptions into ytcaption's ``JobError`` family (httpx's map_exceptions).

    What the egress proxy refused explains the failure better than yt-dlp's "HTTP Error 403"; a
    failure of the proxy the download went through (``proxied``) is ``ProxyFailed``, whatever the
    video would have done.
    """
    try:
        yield
    except (DownloadError, ExtractorError) as exc:
        _close_responses(exc)
        if proxy is not None and proxy.too_large:
            raise FileTooLarge(_too_large(proxy.max_bytes)) from exc
        if proxy is not None and proxy.refused:
            target, why = proxy.refused[0]
            raise RedirectNotAllowed(f"The URL leads to {target!r}, which is not allowed: {why}") from exc
        if proxy is not None and proxy.upstream_failures:
            raise ProxyFailed(proxy.upstream_failures[0]) from exc
        if proxied and proxy is None and _proxy_failed(exc):
            raise ProxyFailed(_proxy_failure_kind(exc)) from exc
        raise classify(exc) from exc


def _close_responses(exc: BaseException) -> None:
    """Close the connection of each HTTP error answer in ``exc``'s chain: yt-dlp leaves it open, and the
    error outlives the download (a job may try its next proxy; the failure is kept until the end)."""
    cause = exc.exc_info[1] if isinstance(exc, DownloadError) and exc.exc_info else exc
    for link in _chain(cause):
        if isinstance(link, HTTPError):
            link.close()


def _proxy_failed(exc: BaseException) -> bool:
    """Whether yt-dlp, sending everything through a proxy, failed because of it: every connection it
    opens is to the proxy, so a network error (refused, reset, timed out, a tunnel the proxy would
    not open: yt-dlp's ``TransportError``, ``ProxyError`` among them) is the proxy's, and so is HTTP 407."""
    cause = exc.exc_info[1] if isinstance(exc, DownloadError) and exc.exc_info else exc
    return any(isinstance(link, TransportError) or (isinstance(link, HTTPError) and link.status == 407)
               for link in _chain(cause))


def _proxy_failure_kind(exc: BaseException) -> str:
    """A few words on a proxy failure, without yt-dlp's message (which may quote the proxy's URL)."""
    text = str(exc).lower()
    for words, kind in (("refused", "connection refused"), ("reset", "connection reset"),
                        ("407", "HTTP 407, proxy authentication required"), ("timed out", "timed out")):
        if words in text:
            return kind
    status = re.search(r"tunnel connection failed: (\d{3})", text)
    return f"it answered HTTP {status.group(1)}" if status else "unreachable or refusing"


def classify(exc: Exception) -> JobError:
    """Decide whether a yt-dlp failure is worth retrying."""
    cause = exc.exc_info[1] if isinstance(exc, DownloadError) and exc.exc_info else exc
    for link in _chain(cause):
        if isinstance(link, JobError):
            return link  # raised by our own guard inside yt-dlp
    message = _clean(str(exc))
    if isinstance(cause, UnsupportedError):
        return UnsupportedURL(f"No video was found at this URL ({message}).")
    if isinstance(cause, HTTPError):
        if cause.status == 429 or cause.status >= 500:
            return TransientDownloadError(f"The video host answered HTTP {cause.status}; try again later.")
        return VideoUnavailable(f"The video host answered HTTP {cause.status} ({message}).")
    if isinstance(cause, TransportError):
        return TransientDownloadError(f"Network error while downloading: {message}.")
    if any(phrase in message.lower() for phrase in _GONE):
        return VideoUnavailable(message)
    if isinstance(cause, ExtractorError) and cause.expected:
        return VideoUnavailable(message)
    return TransientDownloadError(message)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)


def _clean(message: str) -> str:
    return message.removeprefix("ERROR: ").strip()
