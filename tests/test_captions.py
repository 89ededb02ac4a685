"""Captions-first (``source``) and the video's metadata in the transcript.

End to end: pages on the loopback media server whose ``<video>`` has a WebVTT ``<track>``, which
yt-dlp's generic extractor lists as the video's ``subtitles``; a JSON-LD ``VideoObject`` page in
front of one gives the channel (``author``), the upload date and chapters (``hasPart`` clips).
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from app.core.formats import to_txt, to_vtt
from app.core.transcripts import chapters_with_segments
from tests.helpers import FIXTURE_TEXT, status, submit, word_error_rate
from tests.test_egress import Listener
from workers.captions import choose_track, parse_vtt, track_language
from workers.engines import Segment

LECTURE = FIXTURE_TEXT["lecture.webm"]

#: The lecture's captions as a careful uploader would write them: cue settings, an identifier, a
#: comment, tags and a two-line cue, all of which must vanish from the text.
LECTURE_VTT = """WEBVTT
Kind: captions

NOTE written by hand for the test

intro
00:00:00.000 --> 00:00:02.500 align:start position:10%
<b>Good morning</b> everyone.

00:00:02.500 --> 00:00:06.000
Today we will talk about <i>the history</i> of the railway.

00:00:06.000 --> 00:00:10.000 line:90%
The first trains carried coal
from the mines to the harbour.

00:00:10.000 --> 00:00:13.000
<v Lecturer>Later they carried people between the great cities.</v>

00:00:13.000 --> 00:00:17.000
Travel that once took a week could now be done in a single day.

00:00:17.000 --> 00:00:24.000
Towns grew up along the lines, and clocks across the country
were set to the same time so that the timetables would work.
"""

CHAPTERS = [("Welcome", 0, 6), ("The first trains", 6, 13), ("A country on time", 13, 24)]


@pytest.fixture
def pro(make_user):
    return make_user("pro")[1]


def video_page(media_server, track: str | None = None, *, captions: str = LECTURE_VTT,
               media: str = "lecture.webm") -> tuple[str, str]:
    """A page with one ``<video>`` (a copy of ``media`` under a name of its own), with a captions
    ``<track>`` in language ``track`` unless None. Returns the page's URL and the media's name."""
    name = uuid.uuid4().hex[:8]
    media_name = f"{name}-{media}"
    media_server.add(media_name, (media_server.directory / media).read_bytes())
    track_tag = ""
    if track is not None:
        media_server.add(f"{name}.vtt", captions.encode())
        track_tag = f'<track kind="captions" srclang="{track}" label="Captions" src="{name}.vtt">'
    page = (f"<html><head><title>Railways {name}</title></head><body>"
            f'<video controls src="{media_name}">{track_tag}</video></body></html>')
    return media_server.add(f"{name}.html", page.encode()), media_name


def metadata_page(media_server, content_url: str) -> str:
    """A page whose JSON-LD ``VideoObject`` names the video at ``content_url``, its author, upload
    date, duration and chapters (yt-dlp follows ``contentUrl`` and keeps this page's metadata)."""
    video = {"@context": "https://schema.org", "@type": "VideoObject", "name": "The railway",
             "contentUrl": content_url, "duration": "PT24S", "uploadDate": "2024-03-05",
             "author": {"@type": "Person", "name": "Rail History Channel"},
             "hasPart": [{"@type": "Clip", "name": title, "startOffset": start, "endOffset": end}
                         for title, start, end in CHAPTERS]}
    page = (f'<html><head><title>The railway</title><script type="application/ld+json">{json.dumps(video)}'
            "</script></head><body></body></html>")
    return media_server.add(f"{uuid.uuid4().hex[:8]}-about.html", page.encode())


def transcript(client, headers, job_id: str, fmt: str = "json"):
    response = client.get(f"/api/v1/transcriptions/{job_id}?format={fmt}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json() if fmt == "json" else response.text


# --- reading captions ---------------------------------------------------------------------------


def test_webvtt_cues_lose_settings_tags_and_entities():
    segments = parse_vtt(LECTURE_VTT.replace("Good morning", "Good&nbsp;morning &amp; hello"))
    assert [(s.start, s.end) for s in segments] == [(0, 2.5), (2.5, 6), (6, 10), (10, 13), (13, 17), (17, 24)]
    assert segments[0].text == "Good morning & hello everyone."
    assert segments[2].text == "The first trains carried coal from the mines to the harbour."
    assert " ".join(s.text for s in parse_vtt(LECTURE_VTT)) == LECTURE


def test_rolling_captions_become_one_segment_per_new_line():
    """YouTube's rolling style: each cue repeats the line before and adds one, with 10 ms cues between."""
    rolling = """WEBVTT

00:00:00.000 --> 00:00:02.000 align:start position:0%
first<00:00:00.500><c> line</c>

00:00:02.000 --> 00:00:02.010 align:start position:0%
first line

00:00:02.010 --> 00:00:04.000 align:start position:0%
first line
second<00:00:03.000><c> line</c>

00:00:04.000 --> 00:00:04.010
first line
second line

00:00:09.000 --> 00:00:10.000
second line
"""
    assert parse_vtt(rolling) == [Segment(0.0, 2.01, "first line"), Segment(2.01, 4.01, "second line"),
                                  # said again after a pause: a new segment, not a repeat
                                  Segment(9.0, 10.0, "second line")]


def test_srt_reads_too():
    assert parse_vtt("1\r\n00:00:01,000 --> 00:00:02,500\r\nHello\r\n\r\n2\r\n01:00:00,000 --> 01:00:01,000\r\n"
                     "there\r\n") == [Segment(1.0, 2.5, "Hello"), Segment(3600.0, 3601.0, "there")]


TRACKS = {"en-US": [{}], "en-GB": [{}], "fr": [{}], "de-AT": [{}], "live_chat": [{}]}


@pytest.mark.parametrize("subtitles, requested, video_language, expected", [
    (TRACKS, "en", None, "en-GB"),  # any region; sorted, so the same one every time
    ({**TRACKS, "en": [{}]}, "en", None, "en"),  # the exact tag first
    (TRACKS, "fr", "de", "fr"),  # the request wins over the video's language
    (TRACKS, "de", None, "de-AT"),
    (TRACKS, "es", None, None),  # asked for, not there: no other language instead
    (TRACKS, None, "fr", "fr"),  # no request: the video's language
    (TRACKS, None, "fr-CA", "fr"),
    (TRACKS, None, "es", "en-GB"),  # the video's language has no track: not the only one, so English
    ({"de": [{}], "live_chat": [{}]}, None, None, "de"),  # the only track (a chat replay is not one)
    ({"de": [{}], "fr": [{}]}, None, None, None),  # several, none English: nothing to choose
    ({"iw": [{}]}, "he", None, "iw"),  # YouTube's old code for Hebrew
    ({"en": []}, "en", None, None),  # a track with no file
    ({}, None, None, None),
    (None, "en", None, None),
])
def test_which_track_is_chosen(subtitles, requested, video_language, expected):
    assert choose_track(subtitles, requested, video_language) == expected


def test_a_tracks_language_is_whispers_code_for_it():
    assert [track_language(t) for t in ("en-US", "fr", "iw", "zh-Hans", "pt_BR")] == ["en", "fr", "he", "zh", "pt"]


# --- chapters -----------------------------------------------------------------------------------


def segments_at(*starts: float) -> list[dict]:
    return [{"id": index, "start": start, "end": start + 1, "text": f"s{index}"} for index, start in enumerate(starts)]


def test_a_segment_belongs_to_the_chapter_it_starts_in():
    chapters = [{"title": "B", "start": 10.0, "end": 20.0}, {"title": "A", "start": 2.0, "end": 8.0},
                {"title": "C", "start": 20.0, "end": 30.0}, {"title": "D", "start": 30.0, "end": 40.0}]
    assigned = chapters_with_segments(chapters, segments_at(0, 2, 5, 9, 19.5, 20, 35, 50))
    assert [(c["title"], c["first_segment"], c["last_segment"]) for c in assigned] == [
        ("A", 1, 3),  # 0 s is before any chapter; 9 s, in the gap after A, stays with A
        ("B", 4, 4),  # 19.5 s starts in B (and ends in C)
        ("C", 5, 5),
        ("D", 6, 7),  # 50 s, past the last chapter's end, stays with the last
    ]
    assert chapters_with_segments([{"title": "Empty", "start": 0, "end": 1}], []) == [
        {"title": "Empty", "start": 0, "end": 1, "first_segment": None, "last_segment": None}]


def test_txt_and_vtt_mark_each_chapter_start():
    segments = segments_at(0, 1, 6, 7)
    chapters = [{"title": "Intro", "start": 0.5, "end": 6}, {"title": "Main --> part", "start": 6, "end": 65},
                {"title": "  Credits\n", "start": 65, "end": 70}]
    assert to_txt(segments, chapters) == (
        "s0\n\n# Intro (00:00:00)\ns1\n\n# Main --> part (00:00:06)\ns2\ns3\n\n# Credits (00:01:05)\n")
    vtt = to_vtt(segments, chapters)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ns0\n\nNOTE Chapter: Intro (00:00:00.500)\n\n")
    assert "\nNOTE Chapter: Main -> part (00:00:06.000)\n\n00:00:06.000 --> 00:00:07.000\ns2\n" in vtt
    assert vtt.endswith("00:00:07.000 --> 00:00:08.000\ns3\n\nNOTE Chapter: Credits (00:01:05.000)\n")
    assert to_txt(segments) == "s0\ns1\ns2\ns3\n"  # no chapters: one segment a line, as ever


# --- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["subtitles", "", "CAPTIONS", 1, None])
def test_an_unknown_source_is_refused(client, pro, source):
    response = submit(client, pro, "https://youtu.be/jNQXAC9IVRw", source=source)
    assert response.status_code == 400
    assert response.get_json()["error"] == "validation_error" and "source" in response.get_json()["message"]


def test_captions_in_any_language_need_no_multilingual_model(client, pro):
    """The default model (tiny.en) transcribes English only, but captions never reach it."""
    assert submit(client, pro, "https://youtu.be/jNQXAC9IVRw", source="captions", language="fr").status_code == 202
    refused = submit(client, pro, "https://youtu.be/jNQXAC9IVRw", source="auto", language="fr")
    assert refused.get_json()["error"] == "unknown_language"  # auto may fall back to the model


def test_an_idempotency_key_is_for_one_source(client, pro):
    def send(**fields):
        return client.post("/api/v1/transcribe/async/submit", headers={**pro, "Idempotency-Key": "k1"},
                           json={"youtube_url": "https://youtu.be/jNQXAC9IVRw", **fields})

    first = send(source="captions")
    assert first.status_code == 202
    assert send(source="captions").get_json()["job_id"] == first.get_json()["job_id"]
    assert send().status_code == 422  # the same key, the default source: another request


def test_the_openapi_document_lists_the_sources(client):
    spec = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert spec["SubmitBody"]["properties"]["source"]["enum"] == ["whisper", "captions", "auto"]
    assert {"channel", "upload_date", "chapters", "source"} <= set(spec["Transcript"]["properties"])


# --- end to end: a real worker, yt-dlp and the model ----------------------------------------------


def test_captions_are_the_transcript_without_audio_or_model(client, pro, media_server, run_worker):
    page, media_name = video_page(media_server, "en")
    job_id = submit(client, pro, page, source="captions").get_json()["job_id"]
    assert status(client, pro, job_id)["source"] == "captions"
    run_worker()

    body = status(client, pro, job_id)
    assert body["status"] == "completed", body
    result = body["result"]
    assert (result["source"], result["model"], result["language"], result["total_segments"]) == (
        "captions", None, "en", 6)
    assert result["duration"] == 24.0  # where the last caption ends: the page gives no duration
    assert result["timings"]["model_load"] == result["timings"]["transcribe"] == 0
    assert media_server.requests_for(media_name, "GET") == media_server.requests_for(media_name, "HEAD") == []

    document = transcript(client, pro, job_id)
    assert document["text"] == LECTURE
    assert (document["source"], document["caption_track"], document["model"]) == ("captions", "en", None)
    assert [(s["start"], s["end"]) for s in document["segments"]][:2] == [(0.0, 2.5), (2.5, 6.0)]
    assert transcript(client, pro, job_id, "txt") == "\n".join(s["text"] for s in document["segments"]) + "\n"
    srt = transcript(client, pro, job_id, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nGood morning everyone.\n\n2\n00:00:02,500 --> ")
    vtt = transcript(client, pro, job_id, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nGood morning everyone.\n")
    assert "align:" not in vtt and "<" not in vtt


def test_auto_without_captions_transcribes_with_whisper(client, pro, media_server, run_worker):
    page, media_name = video_page(media_server, track=None)
    job_id = submit(client, pro, page, source="auto").get_json()["job_id"]
    run_worker()
    result = status(client, pro, job_id)["result"]
    assert (result["source"], result["model"]) == ("whisper", "tiny.en")
    document = transcript(client, pro, job_id)
    assert (document["source"], document["caption_track"]) == ("whisper", None)
    assert word_error_rate(LECTURE, document["text"]) < 0.15
    assert media_server.requests_for(media_name, "GET")  # the audio was downloaded this time


def test_captions_without_a_track_fail_at_once(client, pro, media_server, run_worker):
    page, media_name = video_page(media_server, track=None)
    job_id = submit(client, pro, page, source="captions").get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert (body["status"], body["error"]["type"]) == ("failed", "no_captions"), body
    assert (body["attempt"], body["max_attempts"]) == (1, 4)  # permanent: not retried
    assert media_server.requests_for(media_name, "GET") == []


def test_captions_in_another_language_only_are_not_used(client, pro, media_server, run_worker):
    page, _ = video_page(media_server, "de")
    job_id = submit(client, pro, page, source="captions", language="en").get_json()["job_id"]
    run_worker()
    error = status(client, pro, job_id)["error"]
    assert error["type"] == "no_captions"
    assert error["message"] == ("The video has manual captions in de but none in 'en'; ask for one of those "
                                "languages with `language`.")


def test_captions_in_a_format_not_read_are_not_used(client, pro, media_server, run_worker):
    page, _ = video_page(media_server, "en")
    page_path = page.rsplit("/", 1)[1]
    html = (media_server.directory / page_path).read_text().replace('.vtt"', '.ttml"')
    media_server.add(page_path, html.encode())
    job_id = submit(client, pro, page, source="captions").get_json()["job_id"]
    run_worker()
    error = status(client, pro, job_id)["error"]
    assert (error["type"], error["message"]) == (
        "no_captions", "The video's 'en' captions are offered only as ttml, which this server does not read.")


def test_a_captions_file_that_is_gone_means_no_captions(client, pro, media_server, run_worker):
    """A track whose file answers 404: ``captions`` fails with no_captions, ``auto`` transcribes the audio."""
    page, _ = video_page(media_server, "en", media="fox.m4a")
    page_path = page.rsplit("/", 1)[1]
    html = (media_server.directory / page_path).read_text()
    media_server.add(page_path, re.sub(r'src="([^"]+)\.vtt"', r'src="\1-gone.vtt"', html).encode())
    only_captions = submit(client, pro, page, source="captions").get_json()["job_id"]
    auto = submit(client, pro, page, source="auto").get_json()["job_id"]
    run_worker()
    failed = status(client, pro, only_captions)
    assert (failed["error"]["type"], failed["attempt"]) == ("no_captions", 1), failed
    assert "HTTP Error 404" in failed["error"]["message"]
    result = status(client, pro, auto)["result"]
    assert result["source"] == "whisper"
    assert word_error_rate(FIXTURE_TEXT["fox.m4a"], transcript(client, pro, auto)["text"]) < 0.25


def test_a_batch_takes_a_source_per_video(client, pro, media_server, run_worker):
    captioned, _ = video_page(media_server, "en")
    plain, _ = video_page(media_server, track=None, media="fox.m4a")
    answer = client.post("/api/v1/transcribe/async/batch", headers=pro, json={"videos": [
        {"youtube_url": captioned, "source": "auto"}, {"youtube_url": plain, "source": "auto"},
        {"youtube_url": plain, "source": "captions"}]})
    assert answer.status_code == 202, answer.get_json()
    run_worker()
    videos = client.get(answer.get_json()["status_url"], headers=pro).get_json()["videos"]
    assert [v["source"] for v in videos] == ["auto", "auto", "captions"]
    assert [(v.get("result") or {}).get("source") for v in videos] == ["captions", "whisper", None]
    assert videos[2]["error"]["type"] == "no_captions"


def test_captions_are_fetched_through_the_egress_proxy(make_client, make_user, media_server, run_worker):
    """The page is on an allowed port, its captions on one the URL policy forbids: the proxy refuses them."""
    client = make_client(ALLOWED_URL_HOSTS=f"127.0.0.1:{media_server.httpd.server_address[1]}")
    headers = make_user("pro")[1]
    listener = Listener()
    try:
        page, _ = video_page(media_server, "en")
        page_path = page.rsplit("/", 1)[1]
        html = (media_server.directory / page_path).read_text()
        html = re.sub(r'src="([^"]+\.vtt)"', f'src="http://127.0.0.1:{listener.port}/captions.vtt"', html)
        media_server.add(page_path, html.encode())
        job_id = submit(client, headers, page, source="captions").get_json()["job_id"]
        run_worker()
    finally:
        listener.close()
    error = status(client, headers, job_id)["error"]
    assert error["type"] == "redirect_not_allowed", error
    assert f"127.0.0.1:{listener.port}" in error["message"]
    assert listener.connections == 0


def test_captions_come_with_the_videos_channel_date_and_chapters(client, pro, media_server, run_worker):
    page, _ = video_page(media_server, "en")
    job_id = submit(client, pro, metadata_page(media_server, page), source="auto").get_json()["job_id"]
    run_worker()
    result = status(client, pro, job_id)["result"]
    assert (result["source"], result["channel"], result["duration"]) == ("captions", "Rail History Channel", 24.0)

    document = transcript(client, pro, job_id)
    assert (document["channel"], document["upload_date"], document["title"]) == (
        "Rail History Channel", "2024-03-05", "The railway")
    assert document["chapters"] == [
        {"title": "Welcome", "start": 0.0, "end": 6.0, "first_segment": 0, "last_segment": 1},
        {"title": "The first trains", "start": 6.0, "end": 13.0, "first_segment": 2, "last_segment": 3},
        {"title": "A country on time", "start": 13.0, "end": 24.0, "first_segment": 4, "last_segment": 5},
    ]
    txt = transcript(client, pro, job_id, "txt")
    assert txt.startswith("# Welcome (00:00:00)\nGood morning everyone.\nToday we will")
    assert "railway.\n\n# The first trains (00:00:06)\nThe first trains carried" in txt
    vtt = transcript(client, pro, job_id, "vtt")
    assert vtt.startswith("WEBVTT\n\nNOTE Chapter: Welcome (00:00:00.000)\n\n00:00:00.000 --> 00:00:02.500\n")
    assert "\nNOTE Chapter: A country on time (00:00:13.000)\n\n00:00:13.000 --> 00:00:17.000\n" in vtt
    assert "NOTE" not in transcript(client, pro, job_id, "srt")


def test_whisper_transcripts_carry_the_chapters_too(client, pro, media_server, run_worker):
    job_id = submit(client, pro, metadata_page(media_server, media_server.url("lecture.webm"))).get_json()["job_id"]
    run_worker()
    document = transcript(client, pro, job_id)
    assert (document["source"], document["channel"], document["upload_date"]) == (
        "whisper", "Rail History Channel", "2024-03-05")
    chapters, segments = document["chapters"], document["segments"]
    assert [(c["title"], c["start"], c["end"]) for c in chapters] == CHAPTERS
    # Whatever Whisper's segments are, each is listed in the one chapter it starts in.
    listed = {index: chapter["title"] for chapter in chapters if chapter["first_segment"] is not None
              for index in range(chapter["first_segment"], chapter["last_segment"] + 1)}
    assert listed == {s["id"]: [title for title, start, _ in CHAPTERS if start <= s["start"]][-1] for s in segments}
    txt = transcript(client, pro, job_id, "txt")
    assert [line for line in txt.splitlines() if line.startswith("# ")] == [
        "# Welcome (00:00:00)", "# The first trains (00:00:06)", "# A country on time (00:00:13)"]
    assert transcript(client, pro, job_id, "vtt").count("\nNOTE Chapter: ") == 3
