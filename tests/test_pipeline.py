"""Submit → Redis → a real RQ worker → real yt-dlp (loopback) → the real Whisper model."""

import os
import signal

import pytest
from rq.job import Job

from app.core.transcripts import TranscriptStore
from tests.helpers import FIXTURE_TEXT, GARBAGE, status, submit, word_error_rate


@pytest.fixture
def pro(make_user):
    return make_user("pro")[1]


def test_submit_poll_fetch_every_format(client, pro, media_server, run_worker):
    """The seed's own flow: submit, poll until completed, fetch the transcript in all formats."""
    job_id = submit(client, pro, media_server.url("lecture.webm")).get_json()["job_id"]
    run_worker()

    answer = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=pro)
    body = answer.get_json()
    assert (body["status"], body["stage"], body["progress"]) == ("completed", "completed", 100)
    assert "Retry-After" not in answer.headers  # nothing more to wait for
    result = body["result"]
    assert result["transcription_id"]
    assert result["total_segments"] >= 3
    assert result["language"] == "en"
    assert result["duration"] == pytest.approx(24.0, abs=0.2)
    assert result["processing_time"] > 0
    assert set(result["timings"]) == {"queued", "download", "model_load", "transcribe", "store"}
    assert result["timings"]["model_load"] == 0  # loaded once, by the engine host

    url = f"/api/v1/transcriptions/{result['transcription_id']}"
    as_json = client.get(url, headers=pro)
    assert as_json.content_type == "application/json"
    document = as_json.get_json()
    assert word_error_rate(FIXTURE_TEXT["lecture.webm"], document["text"]) < 0.15
    assert "user_id" not in document
    assert document["title"] == "lecture" and document["source_url"] == media_server.url("lecture.webm")
    segments = document["segments"]
    assert all(set(s) == {"id", "start", "end", "text"} for s in segments)
    assert all(a["end"] <= b["start"] + 0.01 and a["start"] <= a["end"] for a, b in zip(segments, segments[1:]))

    srt = client.get(url + "?format=srt", headers=pro)
    assert srt.content_type == "application/x-subrip; charset=utf-8"
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:0")
    vtt = client.get(url + "?format=vtt", headers=pro)
    assert vtt.content_type == "text/vtt; charset=utf-8" and vtt.text.startswith("WEBVTT\n\n00:00:")
    txt = client.get(url + "?format=txt", headers=pro)
    assert txt.content_type == "text/plain; charset=utf-8"
    assert txt.text.count("\n") == len(segments)


@pytest.mark.parametrize("name", sorted(FIXTURE_TEXT))
def test_each_fixture_is_transcribed_accurately(client, pro, media_server, run_worker, services, name):
    job_id = submit(client, pro, media_server.url(name), language="en").get_json()["job_id"]
    run_worker()
    record = services.transcripts.get(status(client, pro, job_id)["result"]["transcription_id"])
    assert word_error_rate(FIXTURE_TEXT[name], record["text"]) < 0.25, record["text"]


def test_express_jobs_run_before_standard_jobs(client, make_user, media_server, run_worker, redis):
    _, free = make_user("free")
    _, pro = make_user("pro")
    standard = [submit(client, free, media_server.url("fox.m4a")).get_json()["job_id"] for _ in range(2)]
    express = [submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"] for _ in range(2)]
    run_worker()
    started = {job_id: Job.fetch(job_id, connection=redis).started_at for job_id in standard + express}
    assert all(status(client, free, job_id)["status"] == "completed" for job_id in standard)
    assert max(started[j] for j in express) < min(started[j] for j in standard)


def test_a_worker_on_express_only_leaves_standard_jobs_alone(client, make_user, media_server, run_worker):
    _, free = make_user("free")
    _, pro = make_user("pro")
    standard = submit(client, free, media_server.url("fox.m4a")).get_json()["job_id"]
    express = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker(["express"])
    assert status(client, pro, express)["status"] == "completed"
    assert status(client, free, standard)["status"] == "pending"


def test_transcript_is_visible_only_to_its_owner(client, make_user, media_server, run_worker):
    _, alice = make_user("pro")
    _, bob = make_user("pro")
    job_id = submit(client, alice, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    transcription_id = status(client, alice, job_id)["result"]["transcription_id"]
    for path in (f"/api/v1/transcribe/async/status/{job_id}", f"/api/v1/transcriptions/{transcription_id}",
                 f"/api/v1/transcriptions/{transcription_id}?format=srt"):
        assert client.get(path, headers=bob).status_code == 404
        assert client.get(path, headers=alice).status_code == 200
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=bob).status_code == 404


def test_cancelling_a_finished_job_gives_409(client, pro, media_server, run_worker):
    job_id = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    response = client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=pro)
    assert response.status_code == 409 and response.get_json()["error"] == "job_finished"


def test_a_cancelled_queued_job_never_runs(client, pro, media_server, run_worker, services):
    job_id = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=pro).status_code == 200
    run_worker()
    body = status(client, pro, job_id)
    assert (body["status"], body["started_at"]) == ("cancelled", None)
    assert services.transcripts.get(job_id) is None


def test_a_job_that_sees_its_cancel_first_is_stopped_by_its_worker(client, pro, media_server, run_worker, redis,
                                                                   settings):
    """A cancel that came when the job was taken but not yet started (the API's stop command
    then finds nothing to stop): the job sees the request and has its worker stop it, so RQ says
    `stopped`, as for any job stopped while running."""
    job_id = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    redis.set(f"ytcaption:cancel:{job_id}", 1)  # what cancel_job leaves when the job has not started
    run_worker()
    assert Job.fetch(job_id, connection=redis).get_status() == "stopped"
    assert status(client, pro, job_id)["status"] == "cancelled"
    assert not (settings.work_dir / job_id).exists()


@pytest.mark.parametrize("name, content, error_type", [
    ("missing.webm", None, "video_unavailable"),
    ("garbage.webm", GARBAGE, "undecodable_media"),
])
def test_bad_media_fails_with_a_clear_error_type(client, pro, media_server, run_worker, settings, name, content,
                                                 error_type):
    url = media_server.add(name, content) if content is not None else media_server.url(name)
    job_id = submit(client, pro, url).get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert (body["status"], body["stage"]) == ("failed", "failed")
    assert body["error"]["type"] == error_type, body["error"]
    message = body["error"]["message"]
    # A sentence for the client: no traceback, no path on the worker, no errno number.
    assert message.endswith(".") and "Traceback" not in message and "Errno" not in message, message
    assert "/tmp" not in message and str(settings.work_dir) not in message, message
    assert (body["attempt"], body["max_attempts"]) == (1, 4)  # permanent: no retry


def test_a_transient_failure_waits_for_a_retry(client, pro, media_server, run_worker):
    url = media_server.add("empty.webm", b"")  # no data at all: may be a dropped connection
    job_id = submit(client, pro, url).get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert (body["status"], body["stage"], body["attempt"], body["max_attempts"]) == (
        "pending", "waiting_retry", 2, 4)
    assert body["last_error"]["type"] == "download_failed"
    assert body["next_retry_at"] > body["ended_at"]
    # Ask again when the retry starts: after half to all of JOB_RETRY_BASE (60 s), less the time since.
    answer = client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=pro)
    assert 20 <= int(answer.headers["Retry-After"]) <= 60


def test_too_long_media_fails_before_transcription(client, pro, media_server, run_worker, monkeypatch):
    monkeypatch.setenv("MAX_VIDEO_DURATION", "10")  # the lecture lasts 24 s
    job_id = submit(client, pro, media_server.url("lecture.webm")).get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert body["status"] == "failed"
    assert body["error"]["type"] == "video_too_long"
    assert "24 s" in body["error"]["message"] and "10 s" in body["error"]["message"]


def test_the_jobs_temp_dir_is_removed(client, pro, media_server, run_worker, settings):
    submit(client, pro, media_server.url("fox.m4a"))
    submit(client, pro, media_server.add("junk.webm", b"junk"))
    run_worker()
    assert not settings.work_dir.exists() or list(settings.work_dir.iterdir()) == []


def test_the_worker_restarts_a_dead_engine_host(client, pro, media_server, run_worker, engine_host):
    os.kill(engine_host.process.pid, signal.SIGKILL)
    engine_host.process.wait()
    job_id = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    assert status(client, pro, job_id)["status"] == "completed"
    assert engine_host.is_alive()


def test_running_the_job_again_overwrites_its_one_transcript(client, pro, media_server, run_worker, redis, settings,
                                                           services):
    job_id = submit(client, pro, media_server.url("fox.m4a")).get_json()["job_id"]
    run_worker()
    job = Job.fetch(job_id, connection=redis)
    services.queues["express"].enqueue(job.func_name, kwargs=job.kwargs, job_id=job_id)  # as a retry would
    run_worker()
    assert status(client, pro, job_id)["status"] == "completed"
    assert len(list(redis.scan_iter("ytcaption:transcript:*"))) == 1
    assert TranscriptStore(redis, settings.transcript_ttl).get(job_id)["job_id"] == job_id


def test_duration_in_the_metadata_is_checked_before_downloading(client, pro, media_server, run_worker):
    """A page whose metadata (JSON-LD, as yt-dlp reads it) says the video lasts 4 hours."""
    page = f"""<html><head><title>A long talk</title><script type="application/ld+json">
    {{"@context": "https://schema.org", "@type": "VideoObject", "name": "A long talk",
      "contentUrl": "{media_server.url('lecture.webm')}", "duration": "PT4H", "uploadDate": "2024-01-01"}}
    </script></head><body></body></html>"""
    job_id = submit(client, pro, media_server.add("talk.html", page.encode())).get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert body["error"]["type"] == "video_too_long"
    assert body["error"]["message"] == "The video lasts 14400 s; the limit is 10800 s."


def test_a_job_waiting_for_its_retry_can_be_cancelled(client, pro, media_server, run_worker, services):
    url = media_server.add("empty-again.webm", b"")  # fails transiently: waits for a retry
    job_id = submit(client, pro, url).get_json()["job_id"]
    run_worker()
    assert status(client, pro, job_id)["stage"] == "waiting_retry"
    failed_attempt_ended = status(client, pro, job_id)["ended_at"]
    response = client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=pro)
    assert (response.status_code, response.get_json()["status"]) == (200, "cancelled")
    body = status(client, pro, job_id)
    assert body["status"] == "cancelled" and body["ended_at"] > failed_attempt_ended
    assert services.queues["express"].scheduled_job_registry.count == 0
    assert client.get("/api/v1/me", headers=pro).get_json()["quota"]["used"] == 0  # nothing came of it


def test_audio_without_speech_completes_with_an_empty_transcript(client, pro, media_server, run_worker, services):
    """No words invented in silence, and the client can tell an empty result from a failed one."""
    job_id = submit(client, pro, media_server.url("silence.webm")).get_json()["job_id"]
    run_worker()
    body = status(client, pro, job_id)
    assert body["status"] == "completed", body
    assert (body["result"]["speech_detected"], body["result"]["total_segments"], body["result"]["pieces"]) == (
        False, 0, 1)
    record = services.transcripts.get(body["result"]["transcription_id"])
    assert (record["text"], record["segments"], record["speech_seconds"]) == ("", [], 0.0)
    txt = client.get(f"/api/v1/transcriptions/{job_id}?format=txt", headers=pro)
    assert txt.status_code == 200 and txt.text.strip() == ""
