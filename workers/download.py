"""Download one video's audio, or its own captions, with yt-dlp (``download_errors`` says what a failure means)."""

from __future__ import annotations

import email.utils
import http.server
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from yt_dlp import YoutubeDL
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError

from app.core import stats
from app.core.errors import (
    FileTooLarge,
    JobError,
    LiveNotSupported,
    NoCaptions,
    RedirectNotAllowed,
    TransientDownloadError,
    UnsupportedURL,
    VideoTooLong,
    YouTubeBotCheck,
)
from app.core.proxies import Proxy
from app.core.settings import Settings
from app.core.urls import YOUTUBE_HOSTS
from workers import ytdlp
from workers.captions import caption_tracks, choose_track, parse_vtt
from workers.download_errors import chain, classify
from workers.egress import EgressProxy
from workers.engines import Segment

log = logging.getLogger(__name__)

#: Caption formats ``parse_vtt`` reads, best first (YouTube offers vtt; a page's <track> is WebVTT).
CAPTION_FORMATS = ("vtt", "srt")
#: The largest captions file read (a three-hour video's WebVTT is well under 1 MB).
MAX_CAPTION_BYTES = 50 * 10**6


@dataclass(frozen=True)
class Metadata:
    """What the video's page says about it (None where it says nothing)."""

    title: str | None = None
    duration: float | None = None
    channel: str | None = None
    upload_date: str | None = None  # ISO 8601, YYYY-MM-DD
    #: ``{"title", "start", "end"}`` (seconds), in order; empty when the video has no chapters.
    chapters: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Media:
    """A downloaded audio file, or the segments of the video's own captions: one of the two."""

    metadata: Metadata
    path: Path | None = None
    captions: list[Segment] | None = None
    caption_track: str | None = None  # yt-dlp's key of the track read, e.g. en-US


def fetch_media(
    url: str,
    directory: Path,
    settings: Settings,
    *,
    max_duration: int,
    source: str = "whisper",
    language: str | None = None,
    connection: Redis | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_duration: Callable[[float], None] | None = None,
) -> Media:
    """Download the best audio of ``url`` into ``directory``, or with ``source`` ``captions`` or
    ``auto`` the video's manual captions (``workers.captions.choose_track``) when it has them;
    through ``YTDLP_PROXIES`` if set.

    The duration and size in the metadata are checked (the duration passed to ``on_duration``)
    before anything is downloaded, and the size again while downloading; a stream that is live,
    still to come or just ended is refused from the metadata too. A URL on an allowed
    non-YouTube host is downloaded through an ``EgressProxy``: every request, whoever makes it
    (yt-dlp, each redirect hop, ffmpeg), passes the URL policy before it is sent; the captions too.

    With proxies, the download starts at the next one in turn (``connection``: the Redis that
    keeps the turn and the per-proxy counters) and tries the following ones, each once, after a
    proxy failure or a YouTube bot check.

    Raises:
        VideoTooLong, FileTooLarge, LiveNotSupported, UnsupportedURL, RedirectNotAllowed, NoCaptions
        (``source`` ``captions`` only), and what ``classify`` makes of yt-dlp's errors (VideoUnavailable
        and its kinds, YouTubeBotCheck, TransientDownloadError).
    """
    # YouTube's extractor fetches from Google's hosts (googlevideo.com, ...): those are not checked.
    youtube = urlsplit(url).hostname in YOUTUBE_HOSTS
    proxies = ytdlp.proxy_order(settings.proxies if youtube else ytdlp.egress_proxies(settings), connection)
    cookie_file = ytdlp.job_cookie_file(settings, directory)

    def attempt(proxy: Proxy | None) -> Media:
        given = {"max_duration": max_duration, "source": source, "language": language,
                 "on_progress": on_progress, "on_duration": on_duration}
        if youtube:
            return _download(url, directory, settings, None, proxy.url if proxy else None, cookie_file, **given)
        with EgressProxy(settings.allowed_url_hosts, max_bytes=settings.max_download_bytes, upstream=proxy) as egress:
            return _download(url, directory, settings, egress, egress.url, cookie_file, **given)

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

    Raised only with proxies, and always caught by ``fetch_media`` (not a ``JobError``: a job never
    ends with it, and ``job_error`` must not rebuild one from its code).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason  # a few words, never the proxy's URL (which may hold its password)
        super().__init__(f"The proxy failed: {reason}.")


def _count(connection: Redis | None, proxy: Proxy, outcome: str) -> None:
    if connection is not None:
        stats.record_proxy_download(connection, proxy.label, outcome)


def _download(url: str, directory: Path, settings: Settings, egress: EgressProxy | None, proxy_url: str | None,
              cookie_file: Path | None, *, max_duration: int, source: str, language: str | None,
              on_progress: Callable[[float], None] | None, on_duration: Callable[[float], None] | None) -> Media:
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
    with _mapped_errors(egress, proxy_url is not None), ytdlp.JobYoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=False, ie_key=ytdlp.extractor_for(url))
        if info.get("_type") in ("playlist", "multi_video"):
            raise UnsupportedURL("The URL points to a list of videos, not to one video.")
        _refuse_live(info)
        duration = info.get("duration")
        if duration and duration > max_duration:
            raise VideoTooLong(f"The video lasts {duration:.0f} s; the limit is {max_duration} s.")
        if duration and on_duration:
            on_duration(float(duration))
        metadata = describe(info)
        if source != "whisper":
            track = choose_track(info.get("subtitles"), language, info.get("language"))
            chosen = _readable(info["subtitles"][track]) if track is not None else None
            segments = _try_captions(ydl, info, chosen, directory, egress, source) if chosen is not None else None
            if segments:
                return Media(metadata, captions=segments, caption_track=track)
            if source == "captions":
                raise _no_captions(info.get("subtitles"), track, chosen, language)
            # auto: no captions it can use, so Whisper
        _check_size(sum(f.get("filesize") or f.get("filesize_approx") or 0
                        for f in info.get("requested_formats") or [info]), max_bytes)
        info = ydl.process_ie_result(info, download=True)
        if egress is not None and egress.too_large:  # cut by the proxy: to the downloader, a body that ended
            raise FileTooLarge(_too_large(egress.max_bytes))
        downloads = info.get("requested_downloads") or []
        if not downloads or not Path(downloads[0]["filepath"]).exists():
            raise UnsupportedURL("yt-dlp found no media file to download at this URL.")
        _check_size(Path(downloads[0]["filepath"]).stat().st_size, max_bytes)
        return Media(metadata, path=Path(downloads[0]["filepath"]))


def describe(info: dict[str, Any]) -> Metadata:
    """The metadata a transcript keeps, from yt-dlp's info dict."""
    chapters = []
    for chapter in info.get("chapters") or []:
        start, end = chapter.get("start_time"), chapter.get("end_time")
        if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
            chapters.append({"title": str(chapter.get("title") or "").strip() or f"Chapter {len(chapters) + 1}",
                             "start": round(float(start), 3), "end": round(float(end), 3)})
    upload_date = info.get("upload_date")
    try:
        upload_date = date(int(upload_date[:4]), int(upload_date[4:6]), int(upload_date[6:8])).isoformat()
    except (TypeError, ValueError):  # absent, or not yt-dlp's YYYYMMDD
        upload_date = None
    duration = info.get("duration")
    return Metadata(title=info.get("title"), duration=float(duration) if duration else None,
                    channel=info.get("channel") or info.get("uploader"), upload_date=upload_date,
                    chapters=sorted(chapters, key=lambda chapter: chapter["start"]))


def _readable(offered: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The format of a track to download, as ``subtitlesformat="vtt/srt"`` would choose it: the
    last (yt-dlp lists the best last) of the first of ``CAPTION_FORMATS`` offered."""
    return next((item for ext in CAPTION_FORMATS for item in reversed(offered) if item.get("ext") == ext), None)


def _no_captions(subtitles: dict[str, Any] | None, track: str | None, chosen: dict[str, Any] | None,
                 language: str | None) -> NoCaptions:
    if track is not None:
        if chosen is None:
            formats = ", ".join(sorted({str(item.get("ext")) for item in subtitles[track]}))
            return NoCaptions(f"The video's {track!r} captions are offered only as {formats}, which this server "
                              "does not read.")
        return NoCaptions(f"The video's {track!r} captions are empty.")
    offered = caption_tracks(subtitles)
    if not offered:
        return NoCaptions()
    wanted = repr(language) if language else "English or the video's own language"
    return NoCaptions(f"The video has manual captions in {', '.join(offered)} but none in {wanted}; "
                      "ask for one of those languages with `language`.")


def _try_captions(ydl: YoutubeDL, info: dict[str, Any], chosen: dict[str, Any], directory: Path,
                  proxy: EgressProxy | None, source: str) -> list[Segment] | None:
    """The captions' segments, or None when their file is gone (HTTP 404, say): the video has no
    captions to read after all, and ``auto`` transcribes it instead. A failure worth retrying, or
    a request the URL policy refused, fails the job as any download's would."""
    try:
        return _read_captions(ydl, info, chosen, directory)
    except (DownloadError, RequestError) as exc:
        error = classify(exc)
        if proxy is not None and (proxy.refused or proxy.too_large) or error.transient:
            raise
        if source == "captions":
            raise NoCaptions(f"The video's captions file could not be downloaded: {error.message}") from exc
        log.warning("the captions could not be downloaded (%s); transcribing the audio instead", exc)
        return None


def _read_captions(ydl: YoutubeDL, info: dict[str, Any], chosen: dict[str, Any], directory: Path) -> list[Segment]:
    """Download the captions format ``chosen`` with ``ydl`` (its options, its proxy) and read them.

    The info was extracted once, before the track could be chosen; ``ydl.dl`` downloads the track
    as yt-dlp's own ``writesubtitles`` does, without downloading the video or extracting it again.
    """
    if chosen.get("data") is not None:  # some extractors hand the captions over inline
        return parse_vtt(chosen["data"])
    path = directory / f"captions.{chosen['ext']}"
    request = {**chosen, "http_headers": chosen.get("http_headers") or info.get("http_headers")}
    if not ydl.dl(str(path), request, subtitle=True) or not path.exists():
        raise TransientDownloadError("The video's captions could not be downloaded.")
    # Read into memory whole: a track far larger than any real one (hours of captions are a few MB) is refused.
    if path.stat().st_size > MAX_CAPTION_BYTES:
        raise FileTooLarge(f"The captions file is larger than {MAX_CAPTION_BYTES // 10**6} MB, "
                           "the most this server reads.")
    return parse_vtt(path.read_text(encoding="utf-8", errors="replace"))


def _refuse_live(info: dict[str, Any]) -> None:
    """Refuse, from the metadata, a stream that is not over: its download would never end, or end cut.

    ``post_live`` is YouTube's stream that has just ended: its recording is still being processed,
    and only its last two hours can be downloaded meanwhile. It is refused as for good (a job's
    retries come within minutes; the processing takes hours): the client submits it again.
    """
    status = info.get("live_status") or ("is_live" if info.get("is_live") else None)
    if status == "is_live":
        raise LiveNotSupported("The video is a live stream that has not ended; live streams cannot be "
                               "transcribed. Submit the video again once the stream has ended.")
    if status == "is_upcoming":
        raise LiveNotSupported("The video is a live stream or premiere that has not started yet; submit it "
                               "again once it has ended.")
    if status == "post_live":
        raise LiveNotSupported("The live stream has just ended and its recording is still being processed; "
                               "submit the video again once the recording is published (this can take hours).")


def _check_size(size: float, max_bytes: int) -> None:
    if size > max_bytes:
        raise FileTooLarge(_too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    limit = (f"{max_bytes / 1e9:g} GB" if max_bytes >= 1e9 else f"{max_bytes / 1e6:g} MB" if max_bytes >= 1e6
             else f"{max_bytes:,} bytes")
    return f"The media is larger than {limit}, the most this server downloads."


def warm_up(settings: Settings) -> None:
    """Do once, in the worker before it forks, what each work horse's download would otherwise redo.

    yt-dlp does much on first use in a process: it chooses among its ~1,900 extractors, compiles
    their URL patterns to find the one for a URL, imports that extractor, compiles the patterns of
    its format selection, output template and date parsing (``strptime``'s ~50 date formats), and
    loads CA certificates. Each forked horse did it again: 0.25 s of a 0.3 s loopback download.
    Here ``ytdlp.prepare`` does what it can directly, then a rehearsal (a few bytes from a loopback
    server of its own, downloaded through an egress proxy as a job's) runs the rest along a job's
    own path, and the horses inherit all of it.
    """
    from yt_dlp.utils import unified_timestamp

    ytdlp.prepare()
    with tempfile.TemporaryDirectory(prefix="ytcaption-warm-up-") as directory, _rehearsal_media() as url:
        try:
            with EgressProxy([urlsplit(url).netloc], max_bytes=settings.max_download_bytes) as egress:
                _download(url, Path(directory), settings, egress, egress.url, None, max_duration=60,
                          source="whisper", language=None, on_progress=None, on_duration=None)
        except JobError as exc:  # only slower jobs: not a reason to stop the worker
            log.warning("the download rehearsal failed (%s); each job pays yt-dlp's start-up", exc.message)
    # Every date format, not only those a Last-Modified header tries; last, so that the patterns a
    # job compiles push older ones out of re's cache (strptime's own keeps 5) before these.
    for day_first in (True, False):
        unified_timestamp("", day_first=day_first)


@contextmanager
def _rehearsal_media() -> Iterator[str]:
    """The URL of a few bytes of "audio" on a loopback server, served until the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bytes(1024)
            self.send_response(200)
            self.send_header("Content-Type", "audio/webm")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", email.utils.formatdate(usegmt=True))  # as a file server sends
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                  name="warm-up-media", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/media.webm"
        finally:
            server.shutdown()
            thread.join()


@contextmanager
def _mapped_errors(proxy: EgressProxy | None, proxied: bool = False) -> Iterator[None]:
    """Turn yt-dlp's exceptions into ytcaption's ``JobError`` family (httpx's map_exceptions).

    What the egress proxy refused explains the failure better than yt-dlp's "HTTP Error 403"; a
    failure of the proxy the download went through (``proxied``) is ``ProxyFailed``, whatever the
    video would have done. A network error comes unwrapped from ``YoutubeDL.dl`` (the captions'
    download), hence ``RequestError``.
    """
    try:
        yield
    except (DownloadError, ExtractorError, RequestError) as exc:
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
    for link in chain(cause):
        if isinstance(link, HTTPError):
            link.close()


def _proxy_failed(exc: BaseException) -> bool:
    """Whether yt-dlp, sending everything through a proxy, failed because of it: every connection it
    opens is to the proxy, so a network error (refused, reset, timed out, a tunnel the proxy would
    not open: yt-dlp's ``TransportError``, ``ProxyError`` among them) is the proxy's, and so is HTTP 407."""
    cause = exc.exc_info[1] if isinstance(exc, DownloadError) and exc.exc_info else exc
    return any(isinstance(link, TransportError) or (isinstance(link, HTTPError) and link.status == 407)
               for link in chain(cause))


def _proxy_failure_kind(exc: BaseException) -> str:
    """A few words on a proxy failure, without yt-dlp's message (which may quote the proxy's URL)."""
    text = str(exc).lower()
    for words, kind in (("refused", "connection refused"), ("reset", "connection reset"),
                        ("407", "HTTP 407, proxy authentication required"), ("timed out", "timed out")):
        if words in text:
            return kind
    status = re.search(r"tunnel connection failed: (\d{3})", text)
    return f"it answered HTTP {status.group(1)}" if status else "unreachable or refusing"
