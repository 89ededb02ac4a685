"""Which URLs may be fetched (the SSRF policy), and how YouTube URLs are normalised.

The policy: http(s) only, no credentials in the URL; YouTube's hosts on their default ports;
other hosts only when ``ALLOWED_URL_HOSTS`` lists them. A listed host is trusted exactly as
written (any port, any address: an operator may allow an internal media server); a sub-domain
of a listed host is allowed on default ports only, and only if every address it resolves to is
public: never loopback, private, link-local (cloud metadata at 169.254.169.254) or reserved.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from app.core.errors import (
    ChannelNotSupported,
    HostNotAllowed,
    InvalidURL,
    PlaylistNotSupported,
)

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


_DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (the outside world: tests replace this)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified)


@dataclass(frozen=True)
class VideoURL:
    """A URL that passed the policy: ``url`` is what the worker downloads."""

    url: str
    host: str
    video_id: str | None  # None for media on an explicitly allowed non-YouTube host


def parse_video_url(raw: str, extra_hosts: Iterable[str] = (), resolve: Resolver | None = None) -> VideoURL:
    """Check ``raw`` against the URL policy and normalise YouTube URLs.

    Raises:
        InvalidURL, HostNotAllowed, PlaylistNotSupported, ChannelNotSupported.
    """
    raw = raw.strip()
    if not raw:
        raise InvalidURL("youtube_url must not be empty.")
    if len(raw) > MAX_URL_LENGTH:
        raise InvalidURL(f"youtube_url is longer than {MAX_URL_LENGTH} characters.")
    parts, host = _split(raw)
    if host in YOUTUBE_HOSTS:
        _check_default_port(parts, host)
        video_id = _youtube_video_id(host, parts.path, parts.query)
        return VideoURL(url=f"https://www.youtube.com/watch?v={video_id}", host=host, video_id=video_id)
    check_host(parts, host, extra_hosts, resolve)
    return VideoURL(url=urlunsplit(parts._replace(fragment="")), host=host, video_id=None)


def check_fetch_url(url: str, extra_hosts: Iterable[str] = (), resolve: Resolver | None = None) -> None:
    """Check a URL the worker is about to fetch (a redirect target) against the same policy."""
    parts, host = _split(url)
    if host in YOUTUBE_HOSTS:
        _check_default_port(parts, host)
    else:
        check_host(parts, host, extra_hosts, resolve)


def check_host(parts, host: str, extra_hosts: Iterable[str], resolve: Resolver | None) -> None:
    allowed = {h.lower() for h in extra_hosts}
    if host in allowed:
        return  # listed exactly: trusted as the operator wrote it
    if not any(host.endswith("." + parent) for parent in allowed) or _is_ip_literal(host):
        accepted = "YouTube URLs and URLs on the hosts this server allows" if allowed else "YouTube URLs"
        raise HostNotAllowed(f"Host {host!r} is not allowed: only {accepted} are accepted here.")
    _check_default_port(parts, host)
    try:
        addresses = (resolve or resolve_host)(host)
    except OSError:
        raise InvalidURL(f"Host {host!r} does not resolve.") from None
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise HostNotAllowed(f"Host {host!r} resolves to a private or local address.")


def _split(raw: str):
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
    return parts, host


def _check_default_port(parts, host: str) -> None:
    if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme.lower()]:
        raise HostNotAllowed(f"Port {parts.port} is not allowed for {host!r}.")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


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
