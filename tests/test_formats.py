import json
import re

from app.core.formats import FORMATS, to_srt, to_txt, to_vtt

SEGMENTS = [
    {"id": 0, "start": 0.0, "end": 2.5, "text": " Hello there. "},
    {"id": 1, "start": 2.5, "end": 3661.2345, "text": "A long  pause --> then words."},
    {"id": 2, "start": 3661.3, "end": 3661.3, "text": "   "},  # empty: skipped
]


def test_srt_numbers_cues_and_uses_comma_milliseconds():
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 01:01:01,234\nA long pause --> then words.\n"
    )


def test_vtt_has_header_dot_milliseconds_and_no_arrow_in_text():
    text = to_vtt(SEGMENTS)
    assert text.startswith("WEBVTT\n\n")
    cues = re.findall(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$", text, flags=re.M)
    assert cues == [("00:00:00.000", "00:00:02.500"), ("00:00:02.500", "01:01:01.234")]
    assert "A long pause -> then words." in text


def test_txt_is_one_line_per_segment():
    assert to_txt(SEGMENTS) == "Hello there.\nA long pause --> then words.\n"


def test_end_before_start_is_clamped():
    assert "00:00:05,000 --> 00:00:05,000" in to_srt([{"start": 5, "end": 4, "text": "x"}])


def test_json_hides_the_owner_and_writes_times_in_iso_8601():
    content_type, render = FORMATS["json"]
    assert content_type == "application/json"
    record = {"transcription_id": "j1", "job_id": "j1", "user_id": "u1", "source_url": "https://youtu.be/x",
              "video_id": None, "title": None, "language": "en", "duration": 1.5, "model": "tiny.en",
              "text": "Hi.", "segments": [{"id": 0, "start": 0.0, "end": 1.5, "text": "Hi."}],
              "created_at": 1764439808.25}
    document = json.loads(render(record))
    assert "user_id" not in document
    assert document["created_at"] == "2025-11-29T18:10:08.250000Z"
    assert document["segments"] == record["segments"]
