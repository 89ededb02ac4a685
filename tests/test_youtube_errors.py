"""YouTube's own errors told apart: what ``classify`` makes of each, and whether the job is retried.

Each case runs yt-dlp's real YouTube extractor against a fake YouTube (tests/fake_youtube.py) that
answers with the playability status YouTube sends: yt-dlp builds its message from YouTube's reason
(adding its advice to sign in, its rate-limit note, ...) and ``YoutubeDL.extract_info`` wraps it in
a ``DownloadError``, exactly as with the real YouTube. YouTube's reasons are YouTube's words, not
yt-dlp's: each comment says where yt-dlp's source quotes it (``extractor/youtube/_video.py``, whose
``_TESTS`` note the reason a test video fails with in ``skip``), or else which yt-dlp issue shows
yt-dlp printing it.
"""

from __future__ import annotations

import io

import pytest
from yt_dlp.networking.common import Response
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import DownloadError

from app.core.errors import JobError, LiveNotSupported, public_message
from tests.fake_youtube import URL, fake_youtube, playability, playable, youtube_dl
from tests.helpers import status as job_status
from tests.helpers import submit
from workers.download import _refuse_live
from workers.download_errors import classify
from workers.jobs import is_transient

BOT = "Sign in to confirm you\u2019re not a bot"  # YouTube's typographic apostrophe (U+2019)


def youtube_error(handler, **params) -> DownloadError:
    """The ``DownloadError`` yt-dlp raises for ``URL`` against ``handler``, downloading if it gets that far."""
    with youtube_dl(handler, **params) as ydl, pytest.raises(DownloadError) as raised:
        info = ydl.extract_info(URL, download=False)
        ydl.process_ie_result(info, download=True)
    return raised.value


def classified(player_response=None, **fake) -> JobError:
    return classify(youtube_error(fake_youtube(player_response, **fake)))


def assert_useful(error: JobError, *words: str) -> None:
    """The client's message says what happened in its own words, and nothing of yt-dlp's or the worker's."""
    message = error.message
    assert all(word.lower() in message.lower() for word in words), message
    assert public_message(message) == message  # no path on the worker, no errno
    for leak in ("ERROR:", "[youtube]", "--cookies", "--proxy", "yt-dlp", "http", "please report"):
        assert leak not in message, message


# (id, playabilityStatus, code, words the message must have). The first match of the classifier wins;
# the order of these cases follows its checks.
CASES = [
    # YouTube's reason; yt-dlp removes the subreason "This helps protect our community. Learn more"
    # and appends its login hint (_video.py _real_extract, _base.py _youtube_login_hint). Printed as
    # "Sign in to confirm you’re not a bot. Use --cookies-from-browser or --cookies ..." in
    # yt-dlp issue #11981.
    ("bot check", playability("LOGIN_REQUIRED", BOT, "This helps protect our community. Learn more"),
     "youtube_bot_check", ["not a bot", "YTDLP_COOKIES_FILE", "YTDLP_PROXIES", "PO tokens", "retried"]),
    ("bot check, straight apostrophe", playability("LOGIN_REQUIRED", "Sign in to confirm you're not a bot"),
     "youtube_bot_check", ["not a bot"]),
    # _video.py _real_extract appends ". YouTube is requiring a captcha challenge before playback"
    # when the error screen has a playerCaptchaViewModel: a bot check, whatever the reason says.
    ("captcha", playability("UNPLAYABLE", "Video unavailable", playerCaptchaViewModel={"captchaType": "RECAPTCHA"}),
     "youtube_bot_check", ["captcha", "YTDLP_PROXIES"]),
    # Quoted in _video.py _real_extract, which adds "The current session has been rate-limited by
    # YouTube for up to an hour ...".
    ("rate limited", playability("UNPLAYABLE", "This content isn't available, try again later."),
     "youtube_bot_check", ["try again later"]),
    # Upcoming streams and premieres: no formats, so yt-dlp raises YouTube's reason (raise_no_formats).
    # yt-dlp issue #11617 ("Premieres in N hours"); jmbannon/ytdl-sub#1323 shows both, as yt-dlp raised them.
    ("premiere", playability("LIVE_STREAM_OFFLINE", "Premieres in 6 hours"),
     "live_not_supported", ["Premieres in 6 hours", "submit the video again"]),
    ("upcoming stream", playability("LIVE_STREAM_OFFLINE", "This live event will begin in 2 days."),
     "live_not_supported", ["will begin in 2 days"]),
    # A stream that has just ended: yt-dlp issue #11218 ("ERROR: [youtube] videoID: This live event has ended.").
    ("stream just ended", playability("UNPLAYABLE", "This live event has ended."),
     "live_not_supported", ["has ended"]),
    ("recording not ready", playability("UNPLAYABLE", "This live stream recording is not available."),
     "live_not_supported", ["recording is not available"]),
    # _video.py _TESTS: 'skip': 'Private video'; the subreason says "Sign in", so yt-dlp adds its
    # login hint: this must not read as a bot check.
    ("private", playability("LOGIN_REQUIRED", "Private video", "Sign in if you've been granted access to this video"),
     "private_video", ["private", "will not help"]),
    ("private, reason only", {"status": "LOGIN_REQUIRED", "reason": "This video is private"},
     "private_video", ["private"]),
    # yt-dlp issue ytdl-org/youtube-dl#29928 and Hitomi-Downloader#4403 (yt-dlp's raise_no_formats).
    ("members only", playability("UNPLAYABLE", "Join this channel to get access to members-only content like "
                                               "this video, and other exclusive perks."),
     "members_only", ["members"]),
    ("members of a level", playability("UNPLAYABLE", "This video is available to this channel's members on level: "
                                                     "Gold (or any higher level). Join this channel to get access to "
                                                     "members-only content and other exclusive perks."),
     "members_only", ["members"]),
    # _video.py _is_agegated: AGE_GATE_REASONS 'confirm your age', 'age-restricted', 'inappropriate'.
    # yt-dlp retries with the web_embedded client, then raises with its login hint.
    ("age gate", playability("LOGIN_REQUIRED", "Sign in to confirm your age",
                             "This video may be inappropriate for some users."),
     "age_restricted", ["confirm your age", "age-restricted", "will not help"]),
    # _video.py _real_extract: this subreason makes yt-dlp raise GeoRestrictedError (raise_geo_restricted),
    # to which YoutubeDL adds "You might want to use a VPN or a proxy server (with --proxy)".
    ("geo", playability("UNPLAYABLE", "Video unavailable", "The uploader has not made this video available in "
                                                           "your country"),
     "geo_blocked", ["not made this video available in your country", "will not help"]),
    # _video.py _TESTS: 'skip': 'Video unavailable'.
    ("unavailable", playability("ERROR", "Video unavailable"), "video_unavailable", ["Video unavailable"]),
    ("removed by the uploader",
     playability("ERROR", "Video unavailable", "This video has been removed by the uploader"), "video_unavailable", ["removed by the uploader", "will not help"]),
    # _video.py _TESTS: 'skip': "This video has been removed for violating YouTube's policy on hate speech."
    ("removed for a policy", playability("ERROR", "This video has been removed for violating YouTube's policy on "
                                                  "hate speech."),
     "video_unavailable", ["policy"]),
    ("account terminated", playability("ERROR", "Video unavailable", "This video is no longer available because the "
                                       "YouTube account associated with this video has been terminated."),
     "video_unavailable", ["terminated"]),
    ("copyright", playability("ERROR", "Video unavailable", "This video is no longer available due to a copyright "
                                                            "claim by Some Label"),
     "video_unavailable", ["copyright claim by Some Label"]),
    # _video.py _TESTS: 'skip': 'This video does not exist.' and 'This video is not available.'
    ("does not exist", playability("ERROR", "This video does not exist."), "video_unavailable", ["does not exist"]),
    ("not available", playability("ERROR", "This video is not available."), "video_unavailable", ["not available"]),
]


@pytest.mark.parametrize(("status", "code", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_youtubes_reason_decides_the_error(status, code, words):
    error = classified({"playabilityStatus": status})
    assert (error.code, error.transient) == (code, code == "youtube_bot_check"), error.message
    assert_useful(error, *words)


def test_the_bot_check_is_retried_and_a_private_video_fails_at_once():
    bot = classified({"playabilityStatus": playability("LOGIN_REQUIRED", BOT)})
    private = classified({"playabilityStatus": playability("LOGIN_REQUIRED", "Private video")})
    assert (bot.code, bot.transient, is_transient(bot)) == ("youtube_bot_check", True, True)
    assert (private.code, private.transient, is_transient(private)) == ("private_video", False, False)


def test_youtube_answering_429_to_everything_is_a_bot_block():
    """yt-dlp takes each refused request for a warning and fails with "Failed to extract any player
    response": the 429s are only in its log. The job is retried, and the operator told what to do."""
    handler = fake_youtube(status=429)
    error = classify(youtube_error(handler))
    assert (error.code, error.transient) == ("youtube_bot_check", True)
    assert_useful(error, "YTDLP_PROXIES")
    assert any("player" in url for _, url in handler.requests)


@pytest.mark.parametrize("status", [403, 429])
def test_the_media_host_refusing_the_download_is_a_bot_block(tmp_path, status):
    """Metadata fine, the media URL refused: googlevideo.com's 403 (the PO token it wants is missing,
    or the IP is blocked) or 429, raised by yt-dlp's HTTP downloader."""
    handler = fake_youtube(playable(), media_status=status)
    error = classify(youtube_error(handler, format="bestaudio", paths={"home": str(tmp_path)}, retries=0))
    assert (error.code, error.transient) == ("youtube_bot_check", True)
    assert_useful(error, f"HTTP {status}", "YTDLP_COOKIES_FILE")
    assert any("googlevideo.com" in url for _, url in handler.requests)


def test_a_429_from_another_host_is_an_ordinary_transient_failure():
    """Not YouTube: no cookies or proxies to configure, just try again later. (The shape yt-dlp's
    ``YoutubeDL.trouble`` gives a download's HTTP error: a ``DownloadError`` holding it in ``exc_info``.)"""
    refused = HTTPError(Response(io.BytesIO(b""), "https://media.example.org/a.webm", {}, status=429))
    error = classify(DownloadError("ERROR: unable to download video data: HTTP Error 429: Too Many Requests",
                                   (HTTPError, refused, None)))
    assert (error.code, error.transient) == ("download_failed", True)


@pytest.mark.parametrize(("details", "status"), [
    ({"isLive": True}, "is_live"),
    ({"isUpcoming": True}, "is_upcoming"),
    ({"isPostLiveDvr": True}, "post_live"),
])
def test_a_stream_that_is_not_over_is_refused_from_its_metadata(details, status):
    """yt-dlp's live_status for YouTube's videoDetails flags (_video.py _list_formats); refused before
    any media byte is fetched (the whole way, with a loopback live stream: below)."""
    handler = fake_youtube(playable(**details))
    with youtube_dl(handler) as ydl:
        info = ydl.extract_info(URL, download=False)
    assert info["live_status"] == status
    with pytest.raises(LiveNotSupported) as refused:
        _refuse_live(info)
    assert not refused.value.transient and "submit" in refused.value.message.lower()
    assert not any("googlevideo.com" in url for _, url in handler.requests)


def test_a_finished_stream_or_a_video_is_accepted():
    for details in ({"isLiveContent": True}, {}):  # was_live, and a video never live
        with youtube_dl(fake_youtube(playable(**details))) as ydl:
            _refuse_live(ydl.extract_info(URL, download=False))


# --- a live stream on loopback, the whole way: API, worker, yt-dlp's generic extractor --------------

#: An HLS media playlist without #EXT-X-ENDLIST: more segments are still to come. yt-dlp's generic
#: extractor fetches it again to check (extractor/generic.py _extra_manifest_info; common.py
#: _parse_m3u8_vod_duration finds no duration without the end tag) and reports live_status "is_live".
LIVE_PLAYLIST = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:{sequence}
#EXTINF:4.0,
{name}-segment-{sequence}.ts
#EXTINF:4.0,
{name}-segment-{next}.ts
"""
#: A DASH manifest of type "dynamic" is a live one too (generic.py, the MPD branch of _real_extract).
LIVE_MPD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" profiles="urn:mpeg:dash:profile:isoff-live:2011"
     availabilityStartTime="2026-01-01T00:00:00Z" minimumUpdatePeriod="PT4S" minBufferTime="PT2S">
  <Period id="0" start="PT0S">
    <AdaptationSet mimeType="audio/mp4" segmentAlignment="true">
      <Representation id="audio" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="48000">
        <SegmentTemplate media="{name}-segment-$Number$.m4s" initialization="{name}-init.m4s" duration="4"
                         timescale="1" startNumber="0"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


@pytest.mark.parametrize(("extension", "document"), [("m3u8", LIVE_PLAYLIST), ("mpd", LIVE_MPD)])
def test_a_live_stream_fails_at_once_without_fetching_any_media(client, make_user, media_server, run_worker,
                                                               extension, document):
    _, headers = make_user("pro")
    name = f"live-{extension}"
    url = media_server.add(f"{name}.{extension}", document.format(name=name, sequence=7, next=8).encode())
    job_id = submit(client, headers, url).get_json()["job_id"]
    run_worker()

    body = job_status(client, headers, job_id)
    assert (body["status"], body["error"]["type"], body["attempt"]) == ("failed", "live_not_supported", 1), body
    assert "live stream" in body["error"]["message"]
    assert media_server.requests_for(f"{name}.{extension}")  # the manifest was read...
    assert not media_server.requests_for(f"{name}-segment") and not media_server.requests_for(f"{name}-init")
