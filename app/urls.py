"""Which URLs may be submitted, and how YouTube URLs are normalised to one video id."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from app.errors import ChannelNotSupported, HostNotAllowed, InvalidURL, PlaylistNotSupported

YOUTUBE_HOSTS = frozenset({
    "youtube.com",
    "www.youtube.com",
    "m.youtube.com",
    "music.youtube.com",
    "youtu.be",
    "www.youtu.be",
    "youtube-nocookie.com",
    "www.youtube-nocookie.com",
})

MAX_URL_LENGTH = 2048
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
# Path prefixes whose next segment is the video id.
_ID_PREFIXES = ("shorts", "embed", "live", "v", "e")
_CHANNEL_PREFIXES = ("channel", "c", "user")


@dataclass(frozen=True)
class VideoURL:
    """A URL that passed the policy: ``url`` is what the worker downloads."""

    url: str
    host: str
    video_id: str | None  # None for media on an explicitly allowed non-YouTube host


def parse_video_url(raw: str, extra_hosts: Iterable[str] = ()) -> VideoURL:
    """Check ``raw`` against the URL policy and normalise YouTube URLs.

    Raises:
        InvalidURL, HostNotAllowed, PlaylistNotSupported, ChannelNotSupported.
    """
    raw = raw.strip()
    if not raw:
        raise InvalidURL("youtube_url must not be empty.")
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidURL(f"youtube_url is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(raw)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidURL("youtube_url is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL("youtube_url must be an http:// or https:// URL.")
    if not host:
        raise InvalidURL("youtube_url has no host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("youtube_url must not contain a user name or password.")

    if host in YOUTUBE_HOSTS:
        video_id = _youtube_video_id(host, parts.path, parts.query)
        return VideoURL(url=f"https://www.youtube.com/watch?v={video_id}", host=host, video_id=video_id)
    if host in {h.lower() for h in extra_hosts}:
        return VideoURL(url=urlunsplit(parts._replace(fragment="")), host=host, video_id=None)
    raise HostNotAllowed(f"Host {host!r} is not allowed: only YouTube URLs are accepted here.")


def _youtube_video_id(host: str, path: str, query: str) -> str:
    segments = [s for s in path.split("/") if s]
    params = parse_qs(query)

    if host.endswith("youtu.be"):
        candidate = segments[0] if segments else ""
    elif segments[:1] == ["watch"]:
        candidate = (params.get("v") or [""])[0]
        if not candidate and "list" in params:
            raise PlaylistNotSupported("Playlists are not supported: submit one video URL at a time.")
    elif segments[:1] == ["playlist"]:
        raise PlaylistNotSupported("Playlists are not supported: submit one video URL at a time.")
    elif segments and (segments[0] in _CHANNEL_PREFIXES or segments[0].startswith("@")):
        raise ChannelNotSupported("Channel URLs are not supported: submit one video URL at a time.")
    elif len(segments) >= 2 and segments[0] in _ID_PREFIXES:
        candidate = segments[1]
    else:
        raise InvalidURL("youtube_url is not a YouTube video URL.")

    if not _VIDEO_ID.match(candidate):
        raise InvalidURL("youtube_url does not contain a valid YouTube video id.")
    return candidate
