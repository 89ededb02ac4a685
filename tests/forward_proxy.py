"""A real forward HTTP proxy on loopback, for the tests of ``YTDLP_PROXIES``.

It opens ``CONNECT`` tunnels (what yt-dlp does for HTTPS, and ytcaption's egress proxy for every
download through an upstream proxy) and records each request it gets. Told to ``refuse`` with a
status (407, 502), it answers every request with it and connects nowhere.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading


class ForwardProxy:
    """``with ForwardProxy() as proxy:`` serves on 127.0.0.1:``proxy.port``; ``proxy.requests`` holds
    ``(method, target, Proxy-Authorization or None)`` of each request, in order."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.requests: list[tuple[str, str, str | None]] = []
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(socketserver.StreamRequestHandler):
    rbufsize = 0  # what follows the head belongs to the tunnel

    def handle(self) -> None:
        owner: ForwardProxy = self.server.owner
        self.connection.settimeout(30)
        method, target, _ = self.rfile.readline(8192).decode("latin-1").split()
        authorization = None
        while (line := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "proxy-authorization":
                authorization = value.strip()
        owner.requests.append((method, target, authorization))
        if owner.refuse is not None:
            reason = {407: "Proxy Authentication Required", 502: "Bad Gateway"}.get(owner.refuse, "Refused")
            extra = 'Proxy-Authenticate: Basic realm="test"\r\n' if owner.refuse == 407 else ""
            self.connection.sendall(f"HTTP/1.1 {owner.refuse} {reason}\r\n{extra}Content-Length: 0\r\n"
                                    "Connection: close\r\n\r\n".encode())
            return
        if method != "CONNECT":
            self.connection.sendall(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        except OSError:
            self.connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _pipe(self.connection, upstream)


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy both ways; a side that has sent all it will (EOF) is passed on as a half-close."""
    peers = {client: upstream, upstream: client}
    open_ends = [client, upstream]
    while open_ends:
        readable, _, _ = select.select(open_ends, [], [], 30)
        if not readable:
            return
        for sock in readable:
            try:
                data = sock.recv(65536)
                if data:
                    peers[sock].sendall(data)
                    continue
                open_ends.remove(sock)
                peers[sock].shutdown(socket.SHUT_WR)
            except OSError:
                return
