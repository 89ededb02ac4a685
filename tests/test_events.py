"""A job's live events (Server-Sent Events), read by a real SSE client from gunicorn while a real
worker process runs the job: stages, progress and segments as they happen, one final event, resuming
with Last-Event-ID, and a final event for a job cancelled while the stream is open."""

import json
import threading

import requests
import sseclient

from tests.helpers import FIXTURE_TEXT, http, word_error_rate
from tests.test_processes import create_user


def events_of(api_url: str, headers: dict, job_id: str, last_event_id: str | None = None) -> list:
    """Every event of the job's stream until the server ends it: ``(id, event, data)``."""
    extra = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}/events", headers={**headers, **extra},
                      stream=True, timeout=(10, 120)) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        return [(event.id, event.event, json.loads(event.data))
                for event in sseclient.SSEClient(response).events()]


def submit(api_url: str, headers: dict, url: str) -> str:
    code, _, text = http("POST", api_url + "/api/v1/transcribe/async/submit", headers, {"youtube_url": url})
    assert code == 202, text
    return json.loads(text)["job_id"]


def test_a_running_jobs_stages_progress_and_text_as_they_happen(api_url, worker_process, media_server):
    headers = {"Authorization": f"Bearer {create_user('pro', 'events@example.com')}"}
    job_id = submit(api_url, headers, media_server.url("lecture.webm", delay=0.1))
    seen = events_of(api_url, headers, job_id)

    kinds = [event for _, event, _ in seen]
    assert kinds[-1] == "completed" and kinds.count("completed") == 1, kinds
    final = seen[-1][2]
    assert final["status"] == "completed" and final["result"]["transcription_id"] == job_id
    stages = [data["stage"] for _, event, data in seen if event == "stage"]
    assert [stage for stage in ("starting", "downloading", "transcribing", "storing") if stage in stages] == \
        ["starting", "downloading", "transcribing", "storing"], stages
    progress = [data["progress"] for _, event, data in seen if event == "progress"]
    assert progress == sorted(progress) and any(0 < p < 95 for p in progress) and progress[-1] >= 95, progress
    segments = [data for _, event, data in seen if event == "segment"]
    assert [segment["id"] for segment in segments] == list(range(len(segments)))
    text = " ".join(segment["text"] for segment in segments)
    assert word_error_rate(FIXTURE_TEXT["lecture.webm"], text) < 0.2, text
    # The segments came before the end, not with it: the transcript stored is the one streamed.
    assert kinds.index("segment") < kinds.index("completed")
    ids = [event_id for event_id, _, _ in seen]
    assert all(ids) and len(set(ids)) == len(ids)

    # Reconnecting with Last-Event-ID gives exactly the events after it.
    middle = len(seen) // 2
    assert events_of(api_url, headers, job_id, last_event_id=seen[middle][0]) == seen[middle + 1:]
    # Another user cannot read them.
    other = {"Authorization": f"Bearer {create_user('pro', 'other@example.com')}"}
    code, _, _ = http("GET", f"{api_url}/api/v1/transcribe/async/status/{job_id}/events", other)
    assert code == 404


def test_a_stream_open_on_a_queued_job_ends_when_the_job_is_cancelled(api_url, media_server):
    """No worker: the job waits; the open stream is told of its cancel at once, and ends."""
    headers = {"Authorization": f"Bearer {create_user('free', 'events-cancel@example.com')}"}
    job_id = submit(api_url, headers, media_server.url("fox.m4a"))
    seen, opened = [], threading.Event()

    def read() -> None:
        with requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}/events", headers=headers,
                          stream=True, timeout=(10, 120)) as response:
            opened.set()
            seen.extend((event.event, json.loads(event.data)) for event in sseclient.SSEClient(response).events())

    reader = threading.Thread(target=read)
    reader.start()
    assert opened.wait(60)
    code, _, _ = http("DELETE", f"{api_url}/api/v1/transcribe/async/cancel/{job_id}", headers)
    assert code == 200
    reader.join(60)
    assert not reader.is_alive() and seen == [("cancelled", {"status": "cancelled"})]

    # A job that has ended: its events at once, then the end.
    again = events_of(api_url, headers, job_id)
    assert [(event, data) for _, event, data in again] == seen and again[0][0]


def test_a_job_without_events_gets_a_final_one_from_its_status(api_url, redis, media_server):
    """A job whose stream is gone (expired, or from before events existed) still ends its stream."""
    headers = {"Authorization": f"Bearer {create_user('free', 'events-old@example.com')}"}
    job_id = submit(api_url, headers, media_server.url("fox.m4a"))
    assert http("DELETE", f"{api_url}/api/v1/transcribe/async/cancel/{job_id}", headers)[0] == 200
    assert redis.delete(f"ytcaption:events:{job_id}") == 1
    assert events_of(api_url, headers, job_id) == [(None, "cancelled", {"status": "cancelled"})]
