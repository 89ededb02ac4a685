"""What a yt-dlp failure means for the job: ``classify`` maps it to ytcaption's ``JobError`` family.

YouTube's own reasons (a bot check, a private, members-only, age-restricted or geo-blocked video, a
stream not over) are told apart, so that a client knows whether retrying helps and an operator
can tell "my server is blocked" from "the video is gone" (docs/operations.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from app.core.errors import (
    AgeRestricted,
    GeoBlocked,
    JobError,
    LiveNotSupported,
    MembersOnly,
    PrivateVideo,
    TransientDownloadError,
    UnsupportedURL,
    VideoUnavailable,
    YouTubeBotCheck,
)


def classify(exc: Exception) -> JobError:
    """Map a yt-dlp failure to the ``JobError`` that tells the client what happened and whether retrying helps.

    yt-dlp raises a ``DownloadError`` whose ``exc_info`` holds what caused it: an ``ExtractorError``
    (the site's reason in its message), a ``GeoRestrictedError``, or the ``HTTPError`` or
    ``TransportError`` of a request that failed. Types decide where yt-dlp gives one; YouTube's
    reasons are told apart by their words (``_YOUTUBE_SAYS``).
    """
    cause = exc.exc_info[1] if isinstance(exc, DownloadError) and exc.exc_info else exc
    for link in chain(cause):
        if isinstance(link, JobError):
            return link  # raised by our own guard inside yt-dlp
    reason = _reason(exc, cause)
    site = "YouTube" if str(getattr(cause, "ie", None) or "").startswith("youtube") else "The site"
    if isinstance(cause, UnsupportedError):
        return UnsupportedURL(f"No video was found at this URL ({reason}).")
    if isinstance(cause, GeoRestrictedError):
        return GeoBlocked(_SAYS[GeoBlocked].format(site=site, reason=reason))
    if isinstance(cause, HTTPError):
        if cause.status in (403, 429) and _is_youtube(cause.response.url):
            # Google's answer to too many requests, or to requests it takes for a bot's (a media URL
            # fetched without the PO token YouTube now wants): the server is refused, not the video.
            return YouTubeBotCheck(f"YouTube answered HTTP {cause.status}. {_REFUSED}")
        if cause.status == 429 or cause.status >= 500:
            return TransientDownloadError(f"The video host answered HTTP {cause.status}; try again later.")
        return VideoUnavailable(f"The video host answered HTTP {cause.status} ({reason}).")
    if isinstance(cause, TransportError):
        return TransientDownloadError(f"Network error while downloading: {reason}.")
    words = reason.translate(_STRAIGHT_APOSTROPHES).lower()
    if any(phrase in words for phrase in _YTDLP_SAYS_REFUSED):
        return YouTubeBotCheck(f"YouTube answered none of this server's requests for the video. {_REFUSED}")
    for error, phrases in _YOUTUBE_SAYS:
        if any(phrase in words for phrase in phrases):
            return error(_SAYS[error].format(site=site, reason=reason))
    if isinstance(cause, ExtractorError) and cause.expected:
        return VideoUnavailable(_SAYS[VideoUnavailable].format(site=site, reason=reason))
    return TransientDownloadError(reason)


# What YouTube says, as yt-dlp passes it on (the playability reason, in English, then ". " and the
# subreason), and what yt-dlp itself says about YouTube. The first match wins, so the order matters:
# a bot check or a rate limit may come after "Video unavailable" in the same message, and a private
# video's subreason says "Sign in if you've been granted access". tests/test_youtube_errors.py has
# each message and where it comes from.
_YOUTUBE_SAYS: tuple[tuple[type[JobError], tuple[str, ...]], ...] = (
    (YouTubeBotCheck, (
        "confirm you're not a bot",
        "captcha challenge",  # yt-dlp: "YouTube is requiring a captcha challenge before playback"
        "this content isn't available, try again later",  # yt-dlp: "rate-limited by YouTube for up to an hour"
    )),
    (LiveNotSupported, (
        "live event will begin",
        "premieres in",
        "premiere will begin",
        "this live event has ended",  # it has just ended: its recording is not ready yet
        "live stream recording is not available",
    )),
    (PrivateVideo, ("private video", "this video is private")),
    (MembersOnly, ("members-only", "join this channel", "this channel's members")),
    (AgeRestricted, ("confirm your age", "age-restricted", "inappropriate for some users")),
    (GeoBlocked, ("available in your country", "available from your location")),
    (VideoUnavailable, (
        "video unavailable",
        "this video is unavailable",
        "has been removed",
        "no longer available",
        "is not available",
        "has been terminated",
        "copyright",
        "does not exist",
    )),
)

# yt-dlp's own words when YouTube answered none of its requests for the video's player: each
# refusal (mostly HTTP 403 or 429) is only a warning in the worker's log. On a server whose
# network works, that is YouTube refusing the server.
_YTDLP_SAYS_REFUSED = (
    "failed to extract any player response",
    "your ip is likely being blocked",  # every player response was another video's
)
_REFUSED = ("YouTube is refusing this server's IP address, not this video. The job is retried while it has "
            "attempts left; if this goes on, the operator must give the server YouTube cookies "
            "(YTDLP_COOKIES_FILE), proxies (YTDLP_PROXIES) or PO tokens.")
_NEVER = "retrying will not help."
_SAYS: dict[type[JobError], str] = {
    YouTubeBotCheck: '{site} says: "{reason}". ' + _REFUSED,
    LiveNotSupported: ('{site} says: "{reason}". A live stream or premiere can be transcribed only once it has '
                       "ended and its recording is published; submit the video again then."),
    PrivateVideo: '{site} says: "{reason}". The video is private; ' + _NEVER,
    MembersOnly: '{site} says: "{reason}". The video is for the channel\'s members only; ' + _NEVER,
    AgeRestricted: ('{site} says: "{reason}". The video is age-restricted, shown only to signed-in adults; '
                    + _NEVER),
    GeoBlocked: ('{site} says: "{reason}". The video is not available in the country this server downloads '
                 "from; " + _NEVER),
    VideoUnavailable: '{site} says: "{reason}". The video is unavailable; ' + _NEVER,
}

# What yt-dlp adds to a site's reason: advice for its command line (after ". "), and lines of its
# own (a geo restriction's countries, "You might want to use a VPN").
_YTDLP_ADDITIONS = re.compile(r"\.?\s+(?:Use --|See |Also see |The current session |Your account |"
                              r"It is recommended |For more information|\(caused by )|; please report |\n")
_YTDLP_PREFIX = re.compile(r"^(?:ERROR: )?(?:\[[^\]]+\] (?:[\w-]+: )?)?")
_STRAIGHT_APOSTROPHES = str.maketrans("\u2018\u2019\u02bc\u2032`", "'''''")
# YouTube's pages, its media hosts, and Google's "sorry" page that an over-eager client is sent to.
_YOUTUBE_DOMAINS = ("youtube.com", "youtu.be", "youtube-nocookie.com", "googlevideo.com", "google.com")


def _reason(exc: Exception, cause: BaseException | None) -> str:
    """The site's own words, without yt-dlp's "ERROR: [youtube] <id>: ", advice or plea for bug reports."""
    message = cause.orig_msg if isinstance(cause, ExtractorError) else _YTDLP_PREFIX.sub("", str(exc))
    return _YTDLP_ADDITIONS.split(message.strip(), maxsplit=1)[0].strip().removesuffix(".")


def _is_youtube(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == domain or host.endswith("." + domain) for domain in _YOUTUBE_DOMAINS)


def chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
