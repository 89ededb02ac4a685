"""Download the audio of one video with yt-dlp, and map yt-dlp's errors to ytcaption's."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yt_dlp import YoutubeDL
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, UnsupportedError

from app.core.errors import (
    BadRequest,
    JobError,
    RedirectNotAllowed,
    TransientDownloadError,
    UnsupportedURL,
    VideoTooLong,
    VideoUnavailable,
)
from app.core.urls import YOUTUBE_HOSTS, check_fetch_url

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
    *,
    max_duration: int,
    allowed_hosts: Iterable[str] = (),
    on_progress: Callable[[float], None] | None = None,
    on_duration: Callable[[float], None] | None = None,
) -> Media:
    """Download the best audio of ``url`` into ``directory``.

    The duration in the metadata is checked (and passed to ``on_duration``) before anything
    is downloaded. For a URL on an allowed non-YouTube host every redirect is checked against
    the URL policy before it is followed, and every request yt-dlp makes afterwards too.

    Raises:
        VideoTooLong, VideoUnavailable, UnsupportedURL, RedirectNotAllowed, TransientDownloadError.
    """
    # YouTube's extractor fetches from Google's hosts (googlevideo.com, ...): those are not checked.
    guard = None if urlsplit(url).hostname in YOUTUBE_HOSTS else _policy_guard(allowed_hosts)
    if guard is not None:
        _follow_redirects(url, guard)

    def hook(status: dict[str, Any]) -> None:
        if on_progress and status.get("status") == "downloading":
            total = status.get("total_bytes") or status.get("total_bytes_estimate")
            if total:
                on_progress(min(1.0, status.get("downloaded_bytes", 0) / total))

    options = {
        "format": "bestaudio/best",
        "outtmpl": {"default": "media.%(ext)s"},
        "paths": {"home": str(directory), "temp": str(directory)},
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "no_color": True,
        "cachedir": False,
        "logger": log,
        "progress_hooks": [hook],
        "socket_timeout": 30,
        # Job-level retries decide whether to try again; yt-dlp retries only brief hiccups.
        "retries": 2,
        "extractor_retries": 1,
        "overwrites": True,
    }
    with _mapped_errors(), _GuardedYoutubeDL(options, guard) as ydl:
        info = ydl.extract_info(url, download=False)
        if info.get("_type") in ("playlist", "multi_video"):
            raise UnsupportedURL("The URL points to a list of videos, not to one video.")
        if info.get("is_live"):
            raise UnsupportedURL("Live streams cannot be transcribed; submit the video once the stream has ended.")
        duration = info.get("duration")
        if duration and duration > max_duration:
            raise VideoTooLong(f"The video lasts {duration:.0f} s; the limit is {max_duration} s.")
        if duration and on_duration:
            on_duration(float(duration))
        info = ydl.process_ie_result(info, download=True)
        downloads = info.get("requested_downloads") or []
        if not downloads or not Path(downloads[0]["filepath"]).exists():
            raise UnsupportedURL("yt-dlp found no media file to download at this URL.")
        return Media(path=Path(downloads[0]["filepath"]), title=info.get("title"), duration=duration)


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


def _policy_guard(allowed_hosts: Iterable[str]) -> Callable[[str], None]:
    def guard(target: str) -> None:
        try:
            check_fetch_url(target, allowed_hosts)
        except BadRequest as exc:
            raise RedirectNotAllowed(f"The URL leads to {target!r}, which is not allowed: {exc.message}") from None

    return guard


class _GuardedYoutubeDL(YoutubeDL):
    """YoutubeDL that checks each URL it requests, and where the answer came from, with ``guard``."""

    def __init__(self, params: dict, guard: Callable[[str], None] | None) -> None:
        super().__init__(params)
        self._guard = guard

    def urlopen(self, req):
        if self._guard is None:
            return super().urlopen(req)
        self._guard(req if isinstance(req, str) else req.url)
        response = super().urlopen(req)
        self._guard(response.url)
        return response


def _follow_redirects(url: str, guard: Callable[[str], None]) -> None:
    """Walk the redirect chain of ``url`` (HEAD), checking each target before requesting it."""

    class CheckedRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            guard(newurl)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(CheckedRedirects)
    try:
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=30).close()
    except (urllib.error.URLError, OSError, ValueError):
        pass  # not for this check to judge: yt-dlp reports download errors itself


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn yt-dlp's exceptions into ytcaption's ``JobError`` family (httpx's map_exceptions)."""
    try:
        yield
    except (DownloadError, ExtractorError) as exc:
        raise classify(exc) from exc


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
