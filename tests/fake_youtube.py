"""A fake YouTube at yt-dlp's outer boundary, for the real ``YoutubeIE`` to talk to.

yt-dlp sends every request through the request handlers of its ``YoutubeDL``; ``fake_youtube``
builds one that answers them as YouTube would (a watch page, the innertube API, media hosts)
without any network, as httpx's ``MockTransport`` does. yt-dlp's YouTube extractor then does all
its own work: it reads the player response's playability status, builds its error message from
YouTube's reason, and ``YoutubeDL`` wraps it in a ``DownloadError`` as for the real YouTube.
"""

from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

from yt_dlp import YoutubeDL
from yt_dlp.networking.common import Request, RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError

from tests.helpers import YtdlpLines

VIDEO_ID = "dQw4w9WgXcQ"
URL = f"https://www.youtube.com/watch?v={VIDEO_ID}"
#: A media URL as YouTube gives them (an audio-only format, itag 140).
MEDIA_URL = "https://rr1---sn-4g5e6nzz.googlevideo.com/videoplayback?itag=140&mime=audio%2Fmp4"


def playability(status: str, reason: str, subreason: str | None = None, **error_screen) -> dict:
    """A player response's ``playabilityStatus``, shaped as YouTube sends it (the reason twice,
    as yt-dlp reads it from either place)."""
    renderer = {"reason": {"simpleText": reason}}
    if subreason:
        renderer["subreason"] = {"simpleText": subreason}
    return {"status": status, "reason": reason,
            "errorScreen": {"playerErrorMessageRenderer": renderer, **error_screen}}


def playable(**video_details) -> dict:
    """A player response of a playable video with one audio format at ``MEDIA_URL``."""
    return {
        "playabilityStatus": {"status": "OK"},
        "videoDetails": {"videoId": VIDEO_ID, "title": "A video", "lengthSeconds": "10", **video_details},
        "streamingData": {"adaptiveFormats": [{
            "itag": 140, "url": MEDIA_URL, "mimeType": 'audio/mp4; codecs="mp4a.40.2"', "bitrate": 130_000,
            "contentLength": "160000", "audioQuality": "AUDIO_QUALITY_MEDIUM", "approxDurationMs": "10000",
        }]},
    }


def fake_youtube(player_response: dict | None = None, *, status: int = 200, media_status: int = 200
                 ) -> type[RequestHandler]:
    """A request handler class playing YouTube.

    Args:
        player_response: what the watch page and the innertube player API give for the video.
        status: answered to every request of youtube.com when not 200 (e.g. 429, rate limited).
        media_status: answered to the requests of the media hosts (googlevideo.com).
    """
    player_response = player_response if player_response is not None else {}

    class FakeYouTubeRH(RequestHandler):  # yt-dlp wants its handlers' names to end with "RH"
        _SUPPORTED_URL_SCHEMES = ("https",)
        _SUPPORTED_PROXY_SCHEMES = None
        _SUPPORTED_FEATURES = None
        RH_NAME = "fake_youtube"
        requests: list[tuple[str, str]] = []

        def _send(self, request: Request) -> Response:
            self.requests.append((request.method, request.url))
            host = urlsplit(request.url).hostname or ""
            if host.endswith("googlevideo.com"):
                return answer(request.url, media_status, b"\0" * 160_000, "audio/mp4")
            if status != 200 or not host.endswith("youtube.com"):
                return answer(request.url, status if status != 200 else 404, b"", "text/plain")
            if "/youtubei/v1/player" in request.url:
                return answer(request.url, 200, json.dumps(player_response).encode(), "application/json")
            if "/youtubei/" in request.url:  # initial data ("next"), and the like: nothing of use
                return answer(request.url, 200, b"{}", "application/json")
            # The watch page (and the embed page that yt-dlp tries for age-gated videos).
            config = {"INNERTUBE_API_KEY": "key", "INNERTUBE_CONTEXT": {
                "client": {"clientName": "WEB", "clientVersion": "2.20250101.00.00"}}}
            page = (f"<html><script>ytcfg.set({json.dumps(config)});"
                    f"var ytInitialPlayerResponse = {json.dumps(player_response)};</script></html>")
            return answer(request.url, 200, page.encode(), "text/html; charset=utf-8")

    return FakeYouTubeRH


def answer(url: str, status: int, body: bytes, content_type: str) -> Response:
    response = Response(io.BytesIO(body), url, {"Content-Type": content_type, "Content-Length": str(len(body))},
                        status=status)
    if status >= 400:
        raise HTTPError(response)  # what yt-dlp's own handlers raise for an error status
    return response


def youtube_dl(handler: type[RequestHandler], **params) -> YoutubeDL:
    """A ``YoutubeDL`` whose every request goes to ``handler``.

    yt-dlp has no public way to give one instance its own handlers (plugins register theirs for the
    whole process, which would leak into other tests); its request director is a cached property,
    so setting it on the instance is what replaces it.
    """
    ydl = YoutubeDL({"quiet": True, "no_warnings": True, "cachedir": False, "logger": YtdlpLines(), **params})
    ydl._request_director = ydl.build_request_director([handler])
    return ydl
