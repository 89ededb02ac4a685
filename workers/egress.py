"""The egress proxy: every request a download makes, whoever makes it, passes the URL policy first.

yt-dlp follows redirects inside its HTTP library, and hands some streams (an HLS playlist with
features its own downloader lacks) to ffmpeg, which fetches the playlist's keys and segments
itself. Checking URLs in ytcaption's code cannot see those requests: a host that answered a HEAD
with 200 and a GET with a redirect to localhost, or a playlist whose segments pointed at another
port, reached what the policy forbids. So a download from a non-YouTube host runs through this
proxy, a forward HTTP proxy on 127.0.0.1 that the job's yt-dlp (its ``proxy`` option) and ffmpeg
(``http_proxy``, set by yt-dlp) use for every request. For each request (each redirect hop is a
new one) it checks the target against the URL policy, then connects to an address it checked, so
a second DNS answer cannot point elsewhere. A refused request gets 403 and is remembered: the job
fails with ``redirect_not_allowed`` naming it. The proxy also counts the bytes that come in and
cuts every connection once they pass ``max_bytes`` (``MAX_DOWNLOAD_BYTES``): whoever downloads,
a job cannot fill the disk.

One request per connection: a plain-HTTP request goes upstream with ``Connection: close``, an
HTTPS one is a ``CONNECT`` tunnel to the checked host and port.

Given an ``upstream`` proxy (one of ``YTDLP_PROXIES``, ``http://`` only), the proxy connects to
each checked address through it: a ``CONNECT`` to the address and port, never to the name, so the
upstream proxy cannot resolve the name to somewhere else. Plain HTTP goes through such a tunnel
too. If the upstream proxy refuses, resets, or answers the ``CONNECT`` with anything but 2xx, the
client gets 502 and the failure is remembered (``upstream_failures``): the job tries its next proxy.
"""

from __future__ import annotations

import logging
import os
import select
import selectors
import socket
import socketserver
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from app.core.errors import BadRequest
from app.core.proxies import EGRESS_SCHEMES, Proxy
from app.core.urls import check_fetch_url, resolve_host

log = logging.getLogger(__name__)

#: Seconds a connection through the proxy may stay silent in both directions.
IDLE_TIMEOUT = 60
#: A request's line and headers, at most.
MAX_HEAD_BYTES = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}


class EgressProxy:
    """``with EgressProxy(allowed_hosts) as proxy:`` serves on ``proxy.url`` until the block ends."""

    def __init__(self, allowed_hosts: Iterable[str] = (), max_bytes: int | None = None,
                 upstream: Proxy | None = None) -> None:
        if upstream is not None and upstream.scheme not in EGRESS_SCHEMES:
            raise ValueError(f"the egress proxy cannot forward through {upstream.label}: http:// proxies only")
        self.allowed_hosts = tuple(allowed_hosts)
        self.max_bytes = max_bytes
        self.upstream = upstream
        self.refused: list[tuple[str, str]] = []  # (target, why), in order
        self.upstream_failures: list[str] = []  # what went wrong with the upstream proxy, in order
        self.received = 0  # bytes from upstream, all connections together
        self.too_large = False
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._serve, name="egress-proxy", daemon=True)
        # Written to at the end of the block: it wakes the serving thread at once.
        self._wake_up, self._woken = socket.socketpair()
        self._saved_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> EgressProxy:
        self._thread.start()
        # ffmpeg reads no_proxy from the environment yt-dlp passes on: nothing may bypass the proxy.
        for name in ("no_proxy", "NO_PROXY"):
            if name in os.environ:
                self._saved_env[name] = os.environ.pop(name)
        return self

    def __exit__(self, *exc_info) -> None:
        os.environ.update(self._saved_env)
        self._wake_up.send(b"x")
        self._thread.join(timeout=5)
        self._server.server_close()
        self._wake_up.close()
        self._woken.close()

    def _serve(self) -> None:
        """Accept connections (each served in a thread of its own) until the block ends.

        Not ``serve_forever``, which looks for a shutdown request every ``poll_interval``: a job
        waited that long at its end (0.01 s on average with 0.02 s, a third of a loopback
        download), and a shorter one wakes the thread hundreds of times a second while it downloads.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            selector.register(self._woken, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._woken:
                        return
                    self._server.handle_request()  # a connection is waiting: accepted at once

    def addresses(self, url: str) -> list[str]:
        """The addresses to connect to for ``url``; raises ``BadRequest`` if the policy refuses it."""
        checked = check_fetch_url(url, self.allowed_hosts)
        return checked if checked is not None else resolve_host(urlsplit(url).hostname)

    def count(self, size: int) -> bool:
        """Add ``size`` bytes received; False once the job has received more than ``max_bytes``."""
        with self._lock:
            self.received += size
            if self.max_bytes is not None and self.received > self.max_bytes:
                self.too_large = True
            return not self.too_large

    def refuse(self, target: str, why: str) -> None:
        self.refused.append((target, why))
        log.warning("egress refused target=%s reason=%r", target, why)

    def connect(self, addresses: list[str], port: int) -> socket.socket | None:
        """A connection to the first of ``addresses`` that answers, through the upstream proxy if there is one.

        Through a proxy only the first address is tried: its answer (a 502, say) cannot tell a broken
        proxy from an address that is down, so any failure is taken as the proxy's (``upstream_failures``)
        and the job tries its next proxy.
        """
        if self.upstream is None:
            return _connect(addresses, port)
        try:
            return _tunnel(self.upstream, addresses[0], port)
        except _UpstreamRefused as exc:
            why = str(exc)
        except OSError as exc:
            why = f"the connection to the proxy failed ({exc.strerror or exc.__class__.__name__})"
        self.upstream_failures.append(why)
        log.warning("upstream proxy failed proxy=%s reason=%r", self.upstream.label, why)
        return None


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: EgressProxy


class _Handler(socketserver.StreamRequestHandler):
    rbufsize = 0  # unbuffered: what follows the head (a body, a TLS handshake) stays on the socket

    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(IDLE_TIMEOUT)
        try:
            method, target, head, body_length = self._read_head()
        except (OSError, ValueError):
            return self._answer(400, "Bad request")
        proxy = self.server.proxy
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            url = f"https://{host}:{port}/"
        else:
            url = target
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an absolute http(s) URL: {target!r}")
            port_number = parts.port or (443 if parts.scheme == "https" else 80)
            addresses = proxy.addresses(url)
        except BadRequest as exc:
            proxy.refuse(url, exc.message)
            return self._answer(403, f"Refused by the URL policy: {exc.message}")
        except ValueError as exc:
            proxy.refuse(url, str(exc))
            return self._answer(400, f"Cannot fetch {target!r}: {exc}")
        except OSError as exc:  # DNS: for the downloader to report (and the job to retry)
            return self._answer(502, f"Cannot resolve {parts.hostname!r}: {exc}")
        upstream = proxy.connect(addresses, port_number)
        if upstream is None:
            return self._answer(502, f"Cannot connect to {parts.hostname}:{port_number}")
        with upstream:
            try:
                self._relay(method, parts, head, body_length, upstream)
            except OSError:
                pass  # a side hung up or went silent: the downloader reports what it got

    def _relay(self, method: str, parts, head: bytes, body_length: int, upstream: socket.socket) -> None:
        proxy = self.server.proxy
        if method == "CONNECT":
            self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
            upstream.sendall(f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + head)
            while body_length > 0:  # a body goes up before the answer comes back
                chunk = self.connection.recv(min(body_length, 65536))
                if not chunk:
                    return
                upstream.sendall(chunk)
                body_length -= len(chunk)
            if not _forward_answer_head(upstream, self.connection, proxy):
                return
        _pipe(self.connection, upstream, proxy)

    def _read_head(self) -> tuple[str, str, bytes, int]:
        """The request line's method and target, the headers to send on (hop-by-hop ones dropped) and
        the length of the body. Downloaders send no chunked bodies: one is refused (``ValueError``)."""
        line = self.rfile.readline(8192).decode("latin-1")
        method, target, _version = line.split()
        headers, size, body_length = [], len(line), 0
        while True:
            header = self.rfile.readline(8192)
            size += len(header)
            if size > MAX_HEAD_BYTES:
                raise ValueError("request head too large")
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "transfer-encoding":
                raise ValueError("chunked request bodies are not forwarded")
            if name == "content-length":
                body_length = int(value.strip())
            if name not in _HOP_BY_HOP:
                headers.append(header)
        headers.append(b"Connection: close\r\n\r\n")
        return method.upper(), target, b"".join(headers), body_length

    def _answer(self, status: int, text: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
        body = text.encode()
        try:
            self.connection.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        except OSError:
            pass


def _forward_answer_head(upstream: socket.socket, client: socket.socket, proxy: EgressProxy) -> bool:
    """Send the client the upstream answer's head saying ``Connection: close``, which it is: the client
    must not send a second request on this connection (one request per connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = upstream.recv(65536)
        if not chunk or len(data) > MAX_HEAD_BYTES:
            return False
        data += chunk
    if not proxy.count(len(data)):
        return False
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    kept = [h for h in headers if h.split(b":", 1)[0].strip().lower().decode("latin-1") not in _HOP_BY_HOP]
    client.sendall(b"\r\n".join([status, *kept, b"Connection: close", b"", b""]) + rest)
    return True


def _connect(addresses: list[str], port: int) -> socket.socket | None:
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=IDLE_TIMEOUT)
        except OSError:
            continue
    return None


class _UpstreamRefused(Exception):
    """The upstream proxy answered the ``CONNECT`` with something else than 2xx, or nothing."""


def _tunnel(upstream: Proxy, address: str, port: int) -> socket.socket:
    """A ``CONNECT`` tunnel through ``upstream`` to ``address`` (an IP address the policy checked) and ``port``.

    Raises ``OSError`` if the proxy cannot be reached, ``_UpstreamRefused`` if it does not open the tunnel.
    """
    sock = socket.create_connection((upstream.host, upstream.port), timeout=IDLE_TIMEOUT)
    try:
        target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if upstream.authorization():
            head += f"Proxy-Authorization: {upstream.authorization()}\r\n"
        sock.sendall(head.encode("latin-1") + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:  # a proxy sends nothing after the head of a 200 before we speak
            chunk = sock.recv(1)
            if not chunk:
                raise _UpstreamRefused("the proxy closed the connection without answering the CONNECT")
            answer += chunk
            if len(answer) > MAX_HEAD_BYTES:
                raise _UpstreamRefused("the proxy's answer to the CONNECT is too long")
        status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        status = status_line.split()[1] if len(status_line.split()) > 1 else ""
        if not status.startswith("2"):
            raise _UpstreamRefused(f"the proxy answered the CONNECT with {status_line.strip()!r}")
        return sock
    except BaseException:
        sock.close()
        raise


def _pipe(client: socket.socket, upstream: socket.socket, proxy: EgressProxy) -> None:
    """Copy bytes both ways until the upstream side closes (or both stay silent ``IDLE_TIMEOUT`` s,
    or the job has downloaded too much)."""
    peers = {client: upstream, upstream: client}
    open_ends = [client, upstream]
    while open_ends:
        readable, _, _ = select.select(open_ends, [], [], IDLE_TIMEOUT)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                if sock is upstream:
                    return  # the answer is complete
                open_ends.remove(sock)  # the client has sent all it will: keep reading the answer
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            if sock is upstream and not proxy.count(len(data)):
                log.warning("egress cut: more than %d bytes downloaded", proxy.max_bytes)
                return
            try:
                peers[sock].sendall(data)
            except OSError:
                return
