"""Uploaded audio on the async API: `multipart/form-data` with a `file`, kept in Redis until its job ends,
under `MAX_UPLOAD_BYTES`; and the engine options every submit takes (words, prompt, temperature, translate)."""

import io
import json

import pytest
from rq.job import Job

from tests.conftest import FIXTURES
from tests.helpers import FIXTURE_TEXT, GARBAGE, status, word_error_rate

SUBMIT = "/api/v1/transcribe/async/submit"


def upload(client, headers, data: bytes, filename: str = "fox.m4a", **fields):
    return client.post(SUBMIT, headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(data), filename), **fields})


def upload_keys(redis) -> list[bytes]:
    return list(redis.scan_iter("ytcaption:upload:*"))


def test_an_uploaded_file_is_transcribed_and_its_audio_deleted(client, make_user, redis, run_worker):
    _, headers = make_user("pro")
    response = upload(client, headers, (FIXTURES / "fox.m4a").read_bytes(), language="en")
    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()
    assert accepted["queue"] == "express" and "fox.m4a" in accepted["message"]
    assert upload_keys(redis), "the audio waits in Redis for a worker"

    run_worker()
    final = status(client, headers, accepted["job_id"])
    assert final["status"] == "completed", final
    assert final["filename"] == "fox.m4a" and final["youtube_url"] is None
    transcript = client.get(f"/api/v1/transcriptions/{final['result']['transcription_id']}", headers=headers)
    document = transcript.get_json()
    assert document["filename"] == "fox.m4a" and document["source_url"] is None
    assert word_error_rate(FIXTURE_TEXT["fox.m4a"], document["text"]) < 0.3, document["text"]
    assert "words" not in document["segments"][0], "words only when asked for"
    assert upload_keys(redis) == [], "the upload is deleted when its job ends"


def test_word_timestamps_and_a_prompt(client, make_user, run_worker):
    _, headers = make_user()
    response = upload(client, headers, (FIXTURES / "queue.webm").read_bytes(), "queue.webm",
                      word_timestamps="true", prompt="Express, standard and batch queues.", temperature="0")
    assert response.status_code == 202, response.get_json()
    run_worker()
    final = status(client, headers, response.get_json()["job_id"])
    assert final["status"] == "completed", final
    document = client.get(f"/api/v1/transcriptions/{final['result']['transcription_id']}", headers=headers).get_json()
    assert word_error_rate(FIXTURE_TEXT["queue.webm"], document["text"]) < 0.2, document["text"]
    previous_end = 0.0
    for segment in document["segments"]:
        assert segment["words"], segment
        assert "".join(word["word"] for word in segment["words"]).strip() == segment["text"]
        for word in segment["words"]:
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"], (segment, word)
            assert word["start"] >= previous_end - 0.01, "words in time order"
            previous_end = word["end"]


def test_not_audio_fails_undecodable_media_and_its_upload_is_deleted(client, make_user, redis, run_worker):
    _, headers = make_user()
    job_id = upload(client, headers, GARBAGE, "song.mp3").get_json()["job_id"]
    run_worker()
    final = status(client, headers, job_id)
    assert final["status"] == "failed" and final["error"]["type"] == "undecodable_media", final
    assert "/" not in final["error"]["message"], "no path of the worker in the message"
    assert upload_keys(redis) == []


def test_an_upload_over_the_cap_is_refused_before_anything_is_queued(make_client, make_user, redis):
    client = make_client(MAX_UPLOAD_BYTES="1000")
    _, headers = make_user()
    response = upload(client, headers, b"\0" * 1001)
    assert response.status_code == 413
    assert response.get_json()["error"] == "upload_too_large" and "1,000 bytes" in response.get_json()["message"]
    # (A body announced larger is refused from its Content-Length, unread: tests/test_openai_api.py, over HTTP.)
    assert redis.llen("rq:queue:standard") == 0 and upload_keys(redis) == []
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 0


@pytest.mark.parametrize("fields, code, words", [
    ({}, "missing_file", ["'file'"]),
    ({"file": (io.BytesIO(b""), "empty.wav")}, "missing_file", ["empty"]),
    ({"file": (io.BytesIO(b"x"), "a.wav"), "colour": "blue"}, "validation_error", ["colour"]),
    ({"file": (io.BytesIO(b"x"), "a.wav"), "temperature": "hot"}, "validation_error", ["temperature"]),
    ({"file": (io.BytesIO(b"x"), "a.wav"), "temperature": "1.5"}, "validation_error", ["temperature"]),
    ({"file": (io.BytesIO(b"x"), "a.wav"), "task": "translate"}, "model_cannot_translate", ["tiny.en", "English"]),
    ({"file": (io.BytesIO(b"x"), "a.wav"), "language": "fr"}, "unknown_language", ["English"]),
])
def test_bad_upload_forms_get_a_clear_400(client, make_user, redis, fields, code, words):
    _, headers = make_user()
    response = client.post(SUBMIT, headers=headers, content_type="multipart/form-data", data=fields)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["error"] == code and all(word in body["message"] for word in words), body
    assert upload_keys(redis) == []


def test_translation_names_the_models_that_can(make_client, make_user, tmp_path):
    client = make_client(WHISPER_ALLOWED_MODELS=f"base={tmp_path}")
    _, headers = make_user()
    response = client.post(SUBMIT, headers=headers, json={"youtube_url": "https://youtu.be/jNQXAC9IVRw",
                                                          "task": "translate"})
    assert response.status_code == 400
    assert "choose one of: base" in response.get_json()["message"]


def test_captions_are_not_translated(make_client, make_user, tmp_path):
    client = make_client(WHISPER_ALLOWED_MODELS=f"base={tmp_path}")
    _, headers = make_user()
    response = client.post(SUBMIT, headers=headers, json={"youtube_url": "https://youtu.be/jNQXAC9IVRw",
                                                          "task": "translate", "model": "base", "source": "auto"})
    assert response.status_code == 400 and "source 'whisper'" in response.get_json()["message"]


def test_a_cancelled_upload_never_runs_and_its_audio_is_deleted(client, make_user, redis):
    _, headers = make_user()
    job_id = upload(client, headers, (FIXTURES / "fox.m4a").read_bytes()).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    assert upload_keys(redis) == []


def test_the_same_idempotency_key_with_another_file_is_another_request(client, make_user):
    _, headers = make_user()
    keyed = {**headers, "Idempotency-Key": "upload-1"}
    first = upload(client, keyed, b"one")
    again = upload(client, keyed, b"one")
    other = upload(client, keyed, b"two")
    assert first.status_code == 202 and again.get_json()["job_id"] == first.get_json()["job_id"]
    assert other.status_code == 422


def test_the_job_carries_the_file_by_reference_only(client, make_user, redis):
    _, headers = make_user()
    job_id = upload(client, headers, b"RIFF" + b"\0" * 5000, "talk.wav", word_timestamps="true").get_json()["job_id"]
    job = Job.fetch(job_id, connection=redis)
    assert job.kwargs["upload"] == {"filename": "talk.wav", "bytes": 5004}
    assert job.kwargs["options"] == {"word_timestamps": True}
    assert len(json.dumps(job.kwargs)) < 500


def test_a_files_name_loses_its_directories_and_control_characters(client, make_user):
    _, headers = make_user()
    job_id = upload(client, headers, b"x" * 100, "../../etc/pass\twd\x1b[31m.mp3").get_json()["job_id"]
    assert status(client, headers, job_id)["filename"] == "passwd[31m.mp3"
