"""Which URLs may be fetched (the SSRF policy), and how YouTube URLs are normalised.

The policy: http(s) only, no credentials in the URL; YouTube's hosts on their default ports;
other hosts only when ``ALLOWED_URL_HOSTS`` lists them. An entry is ``host`` (its default ports,
80 and 443), ``host:port`` (that port) or ``host:*`` (any port); an IPv6 address is written in
brackets (``[::1]:8080``). A listed host is trusted at any address (an operator may allow an
internal media server); a sub-domain of a listed name is allowed on default ports only, and only
if every address it resolves to is public: never loopback, private, link-local (cloud metadata
at 169.254.169.254) or reserved.

A webhook's URL (``callback_url``) passes the same rules, open to any public host: on its default
port, when every address its name resolves to is public; or a host ``WEBHOOK_ALLOWED_HOSTS``
lists, at any address, on the ports its entry names (``check_callback_url``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
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

_HOST_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")


@dataclass(frozen=True)
class AllowedHost:
    """One entry of ``ALLOWED_URL_HOSTS``: ``host``, ``host:port`` or ``host:*``."""

    host: str
    port: int | None = None  # None: the scheme's default port
    any_port: bool = False

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        """Read an entry; raises ``ValueError`` saying what is wrong with it."""
        text = entry.strip().lower()
        if "/" in text or "@" in text:
            raise ValueError(f"{entry!r}: write the host alone (host, host:port or host:*), no scheme, user or path")
        if text.startswith("["):  # [IPv6] or [IPv6]:port
            host, _, rest = text[1:].partition("]")
            if rest and not rest.startswith(":"):
                raise ValueError(f"{entry!r} is not host, host:port or host:*")
            port = rest[1:] if rest else None
            if not _is_ip_literal(host) or ":" not in host:
                raise ValueError(f"{entry!r}: only an IPv6 address goes in brackets")
        elif text.count(":") > 1:
            raise ValueError(f"{entry!r}: write an IPv6 address in brackets, e.g. [::1]:8080")
        else:
            host, _, port = text.partition(":")
            port = port if ":" in text else None
            if not (_is_ip_literal(host) or _HOST_NAME.match(host)):
                raise ValueError(f"{entry!r} is not a host name or IP address (write host, host:port or host:*)")
        if port is None:
            return cls(host)
        if port == "*":
            return cls(host, any_port=True)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535, or *")
        return cls(host, port=int(port))

    def allows(self, scheme: str, port: int) -> bool:
        if self.any_port:
            return True
        return port == (self.port if self.port is not None else _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:*" if self.any_port else f"{host}:{self.port}" if self.port else host


@lru_cache(maxsize=64)
def _allowed(entries: tuple[str, ...]) -> tuple[AllowedHost, ...]:
    return tuple(AllowedHost.parse(entry) for entry in entries)


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


def check_fetch_url(url: str, extra_hosts: Iterable[str] = (), resolve: Resolver | None = None) -> list[str] | None:
    """Check a URL the worker is about to fetch (each hop of a redirect too) against the same policy.

    Returns the addresses that were checked, for the caller to connect to (and not to a second DNS
    answer), or ``None`` when the host may be at any address (YouTube's, or listed).
    """
    parts, host = _split(url)
    if host in YOUTUBE_HOSTS:
        _check_default_port(parts, host)
        return None
    return check_host(parts, host, extra_hosts, resolve)


def check_callback_url(url: str, allowed_hosts: Iterable[str] = (),
                       resolve: Resolver | None = None) -> list[str] | None:
    """Check a webhook's URL (``callback_url`` at submit; each request of a delivery, each redirect hop too).

    Returns the public addresses the host resolves to, for the caller to connect to (and not to a
    second DNS answer), or ``None`` for a host ``allowed_hosts`` lists (trusted at any address).

    Raises:
        InvalidURL (not an http(s) URL, credentials in it, or a name that does not resolve), HostNotAllowed.
    """
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"callback_url is longer than {MAX_URL_LENGTH} characters.")
    parts, host = _split(url, "callback_url")
    scheme = parts.scheme.lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    listed = [rule for rule in _allowed(tuple(allowed_hosts)) if rule.host == host]
    if listed:
        if any(rule.allows(scheme, port) for rule in listed):
            return None  # listed: trusted at any address, as the operator wrote it
        entries = ", ".join(str(rule) for rule in listed)
        raise HostNotAllowed(f"Port {port} is not allowed for the callback host {host!r} (this server allows "
                             f"{entries}).")
    if port != _DEFAULT_PORTS[scheme]:
        raise HostNotAllowed(f"Port {port} is not allowed for the callback host {host!r}: a callback URL uses its "
                             f"scheme's default port (80 or 443).")
    try:
        addresses = (resolve or resolve_host)(host)
    except OSError:
        raise InvalidURL(f"The callback host {host!r} does not resolve.") from None
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise HostNotAllowed(f"The callback host {host!r} resolves to a private or local address: callback URLs "
                             f"must point to public hosts.")
    return addresses


def check_host(parts, host: str, extra_hosts: Iterable[str], resolve: Resolver | None) -> list[str] | None:
    rules = _allowed(tuple(extra_hosts))
    scheme = parts.scheme.lower()
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    listed = [rule for rule in rules if rule.host == host]
    if listed:
        if any(rule.allows(scheme, port) for rule in listed):
            return None  # listed: trusted at any address, as the operator wrote it
        entries = ", ".join(str(rule) for rule in listed)
        raise HostNotAllowed(f"Port {port} is not allowed for {host!r} (this server allows {entries}).")
    names = {rule.host for rule in rules if not _is_ip_literal(rule.host)}
    if not any(host.endswith("." + parent) for parent in names) or _is_ip_literal(host):
        accepted = "YouTube URLs and URLs on the hosts this server allows" if rules else "YouTube URLs"
        raise HostNotAllowed(f"Host {host!r} is not allowed: only {accepted} are accepted here.")
    _check_default_port(parts, host)
    try:
        addresses = (resolve or resolve_host)(host)
    except OSError:
        raise InvalidURL(f"Host {host!r} does not resolve.") from None
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise HostNotAllowed(f"Host {host!r} resolves to a private or local address.")
    return addresses


def _split(raw: str, field: str = "youtube_url"):
    try:
        parts = urlsplit(raw)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidURL(f"{field} is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"{field} must be an http:// or https:// URL.")
    if not host:
        raise InvalidURL(f"{field} has no host.")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL(f"{field} must not contain a user name or password.")
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
