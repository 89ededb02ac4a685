"""The proxies of ``YTDLP_PROXIES``: parsed once, named without their credentials.

A proxy URL may carry a user name and password (``http://user:secret@proxy:3128``). They are
secrets: a ``Proxy`` shows itself, in a log line, a metric label or an error message, as its
``label`` (``http://proxy:3128``) only; ``url`` (with the credentials) goes to yt-dlp and nowhere else.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

#: The proxy schemes yt-dlp supports (``--proxy``).
SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
#: The schemes the egress proxy can forward through (non-YouTube downloads): ``CONNECT`` over plain HTTP.
EGRESS_SCHEMES = ("http",)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SOCKS_PORT = 1080


@dataclass(frozen=True)
class Proxy:
    scheme: str
    host: str
    port: int
    url: str = field(repr=False)  # with the credentials: for yt-dlp only
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``scheme://host:port``: how the proxy is named where anyone may read it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.label

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header's value (Basic), if the URL has credentials."""
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


def parse_proxy(entry: str, position: int) -> Proxy:
    """One proxy URL; ``ValueError`` with a sentence that names it by position and label, never its password."""
    try:
        parts = urlsplit(entry.strip())
        scheme = parts.scheme.lower()
        port = parts.port
        host = parts.hostname
    except ValueError:  # e.g. a port that is not a number
        raise ValueError(f"proxy {position} is not a URL such as http://proxy.example:3128") from None
    if scheme not in SCHEMES:
        raise ValueError(f"proxy {position} has the scheme {scheme or '(none)'!r}; use one of {', '.join(SCHEMES)}")
    if not host:
        raise ValueError(f"proxy {position} has no host (e.g. {scheme}://proxy.example:3128)")
    port = port or _DEFAULT_PORTS.get(scheme, _SOCKS_PORT)
    proxy = Proxy(scheme, host, port, entry.strip(),
                  unquote(parts.username) if parts.username is not None else None,
                  unquote(parts.password) if parts.password is not None else None)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"proxy {position} ({proxy.label}) has a path or query; "
                         "give scheme://[user:password@]host:port")
    return proxy


def parse_proxies(value: str) -> tuple[Proxy, ...]:
    """``YTDLP_PROXIES``: comma-separated proxy URLs."""
    entries = [entry for entry in value.split(",") if entry.strip()]
    return tuple(parse_proxy(entry, position) for position, entry in enumerate(entries, start=1))
