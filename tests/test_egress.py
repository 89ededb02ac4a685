"""Everything a download fetches passes the URL policy first (issue 12, findings 2 and 4).

A real worker downloads from a hostile server on an allowed port; a listener on a port the
policy forbids (a stand-in for Redis, cloud metadata, an admin page) counts the connections it
gets: there must be none, whichever program makes the request (yt-dlp, a redirect hop, ffmpeg).
"""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from tests.helpers import status, submit


class Listener:
    """A TCP port that counts the connections it accepts (and answers none of them)."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1") -> None:
        self.sock = socket.socket(family)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class HostileHandler(http.server.BaseHTTPRequestHandler):
    """``/sneaky``: HEAD 200, GET a redirect to ``server.forbidden``; ``/plain.m3u8`` and
    ``/keyed.m3u8``: HLS playlists whose segments, or whose key, are on ``server.forbidden``;
    ``/segment.ts``: a segment; ``/big``: ``server.big`` bytes, without a length.
    Every request's path and headers go to ``server.seen``; bytes of ``/big`` sent, to ``server.sent``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, body[::-1])

    def do_GET(self):
        self.server.seen.append((self.path, self.headers))
        forbidden = self.server.forbidden
        if self.path == "/sneaky":
            if self.command == "HEAD":
                return self._send(200, headers={"Content-Type": "audio/mp4"})
            return self._send(302, headers={"Location": f"{forbidden}/secret"})
        if self.path in ("/plain.m3u8", "/keyed.m3u8"):
            segment = f"{forbidden}/segment.ts" if self.path == "/plain.m3u8" else "segment.ts"
            key = f'#EXT-X-KEY:METHOD=AES-128,URI="{forbidden}/key"\n' if self.path == "/keyed.m3u8" else ""
            playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
                        f"{key}#EXTINF:4.0,\n{segment}\n#EXTINF:4.0,\n{segment}\n#EXT-X-ENDLIST\n")
            return self._send(200, playlist.encode(), {"Content-Type": "application/vnd.apple.mpegurl"})
        if self.path == "/segment.ts":
            return self._send(200, bytes(188 * 100), {"Content-Type": "video/mp2t"})
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Connection", "close")  # no length: the body ends when the connection does
            self.end_headers()
            block = bytes(64 * 1024)
            try:
                while self.server.sent < self.server.big:
                    self.wfile.write(block)
                    self.server.sent += len(block)
            except OSError:
                pass
            self.close_connection = True
            return
        self._send(404)


@pytest.fixture
def hostile(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    server.daemon_threads = True
    server.seen, server.sent, server.big, server.forbidden = [], 0, 0, ""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker_setup(make_client, make_user, hostile):
    """A client and a user whose server allows exactly the hostile server's port."""
    client = make_client(ALLOWED_URL_HOSTS=f"127.0.0.1:{hostile.server_address[1]},[::1]:{hostile.server_address[1]}")
    return client, make_user("pro")[1], f"http://127.0.0.1:{hostile.server_address[1]}"


def download_pointing_at(listener: Listener, host: str, path: str, worker_setup, hostile, run_worker) -> dict:
    """Submit the hostile server's ``path``, whose links lead to ``listener`` (on ``host``), run a
    worker until the job is done and return the job's status (the listener closed, its count kept)."""
    client, headers, base = worker_setup
    hostile.forbidden = f"http://{host}:{listener.port}"
    try:
        job_id = submit(client, headers, base + path).get_json()["job_id"]
        run_worker()
        body = status(client, headers, job_id)
    finally:
        listener.close()
    print(f"forbidden port ({host}, {path}): {listener.connections} connections; job {body['status']}")
    return body


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_redirect_made_only_to_get_is_checked_before_it_is_followed(worker_setup, hostile, run_worker,
                                                                      family, host):
    listener = Listener(family, host)
    body = download_pointing_at(listener, "[::1]" if host == "::1" else host, "/sneaky", worker_setup, hostile,
                                run_worker)
    assert (body["status"], (body.get("error") or {}).get("type")) == ("failed", "redirect_not_allowed"), body
    assert str(listener.port) in body["error"]["message"]
    assert listener.connections == 0


@pytest.mark.parametrize("playlist", ["plain.m3u8", "keyed.m3u8"])
def test_an_hls_playlist_cannot_send_a_download_elsewhere(worker_setup, hostile, run_worker, playlist, monkeypatch):
    """Segments on a forbidden port (yt-dlp's own HLS downloader fetches them), or an AES key there:
    without AES (pycryptodomex), yt-dlp hands such a playlist to ffmpeg, which fetches key and segments itself.

    yt-dlp[default] installs pycryptodomex, and then decrypts natively; so that ffmpeg's requests are
    proven to go through the egress proxy too, the HLS downloader is shown a yt-dlp without AES: it decides
    on ``Cryptodome.AES`` (``yt_dlp/downloader/hls.py``), patched here before the worker forks the job."""
    import types

    import yt_dlp.downloader.hls

    monkeypatch.setattr(yt_dlp.downloader.hls, "Cryptodome", types.SimpleNamespace(AES=None))
    listener = Listener()
    body = download_pointing_at(listener, "127.0.0.1", f"/{playlist}", worker_setup, hostile, run_worker)
    assert body["status"] == "failed", body
    assert listener.connections == 0
    # ffmpeg sends its own header (yt-dlp gives it yt-dlp's User-Agent).
    by_ffmpeg = [path for path, request_headers in hostile.seen if "Icy-MetaData" in request_headers]
    print(f"{playlist}: {body['error']['type']}; requests by ffmpeg: {by_ffmpeg}")
    if playlist == "keyed.m3u8":
        assert shutil.which("ffmpeg"), "ffmpeg is needed: yt-dlp hands it keyed HLS (.ci/run installs it)"
        assert by_ffmpeg, "ffmpeg was expected to fetch this playlist itself"


def test_a_download_past_max_download_bytes_is_cut_and_fails(make_client, make_user, hostile, run_worker, settings):
    """A body with no length (nothing to check before) is cut once it passes MAX_DOWNLOAD_BYTES."""
    client = make_client(ALLOWED_URL_HOSTS=f"127.0.0.1:{hostile.server_address[1]}", MAX_DOWNLOAD_BYTES="1000000")
    headers = make_user("pro")[1]
    hostile.big = 200_000_000
    job_id = submit(client, headers, f"http://127.0.0.1:{hostile.server_address[1]}/big").get_json()["job_id"]
    run_worker()
    body = status(client, headers, job_id)
    print(f"download cut after the server sent {hostile.sent / 1e6:.1f} MB of {hostile.big / 1e6:.0f} MB")
    assert (body["status"], (body.get("error") or {}).get("type")) == ("failed", "file_too_large"), body
    assert body["attempt"] == 1  # not retried: it would be as large next time
    assert hostile.sent < 50_000_000
    assert not any(Path(settings.work_dir).rglob("*.part")), "the partial download was left on disk"


def test_a_download_whose_length_is_over_the_limit_stops_at_once(make_client, make_user, media_server, run_worker):
    client = make_client(MAX_DOWNLOAD_BYTES="10000")
    headers = make_user("pro")[1]
    job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    body = status(client, headers, job_id)
    assert (body["status"], (body.get("error") or {}).get("type")) == ("failed", "file_too_large"), body
    assert "larger than 10,000 bytes" in body["error"]["message"]


def test_https_goes_through_a_checked_tunnel(hostile):
    """yt-dlp and ffmpeg reach an https URL with CONNECT: the proxy checks host and port first."""
    from workers.egress import EgressProxy

    port = hostile.server_address[1]
    listener = Listener()
    try:
        with EgressProxy([f"127.0.0.1:{port}"]) as proxy:
            proxy_port = int(proxy.url.rsplit(":", 1)[1])
            answers = {}
            for target in (f"127.0.0.1:{port}", f"127.0.0.1:{listener.port}", f"localhost:{port}"):
                with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as conn:
                    conn.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
                    answers[target] = conn.recv(4096).split(b"\r\n", 1)[0]
                    if answers[target].endswith(b"200 Connection established"):
                        # Through the tunnel, plain HTTP here (TLS in real life): the allowed server answers.
                        conn.sendall(b"GET /segment.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        assert b" 200 " in conn.recv(4096).split(b"\r\n", 1)[0]
    finally:
        listener.close()
    assert answers[f"127.0.0.1:{port}"] == b"HTTP/1.1 200 Connection established"
    assert answers[f"127.0.0.1:{listener.port}"] == b"HTTP/1.1 403 Forbidden"
    assert answers[f"localhost:{port}"] == b"HTTP/1.1 403 Forbidden"
    assert listener.connections == 0
    assert [path for path, _ in hostile.seen] == ["/segment.ts"]
    assert [target for target, _ in proxy.refused] == [f"https://127.0.0.1:{listener.port}/", f"https://localhost:{port}/"]


def test_the_proxy_forwards_a_request_body_and_says_it_closes(hostile):
    """Some extractors POST: the body goes up before the answer comes back, and the client learns
    that the connection closes after the answer (one request per connection)."""
    import urllib.request

    from workers.egress import EgressProxy

    port = hostile.server_address[1]
    with EgressProxy([f"127.0.0.1:{port}"]) as proxy:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
        body = bytes(range(256)) * 1000
        with opener.open(urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=body), timeout=10) as answer:
            assert answer.read() == body[::-1]
            assert answer.headers["Connection"] == "close"
    assert proxy.refused == []
