"""A long recording shared among workers (``workers.pieces``): real workers, real Redis, the real model.

The thresholds are lowered for the tests (pieces of 30 s above 60 s), so that a recording of a
few minutes made from the committed fixtures is cut into several pieces.
"""

import os
import signal
import subprocess

import numpy as np
import pytest
from rq.job import Job

from app.core import events
from tests.helpers import FIXTURE_TEXT, horse_of, start_worker, status, stop_process, submit, wait_for, word_error_rate
from tests.test_decoding import RATE, fixture_audio, silence, write_wav
from workers.decoding import Span, plan_pieces
from workers.pieces import PieceStore, piece_job_id

SPOKEN = ("lecture.webm", "queue.webm", "fox.m4a")


# --- where a recording is cut (pure) ----------------------------------------------------------------


def test_cuts_fall_in_the_pause_nearest_to_where_they_are_due():
    pauses = [Span(20.0, 20.3), Span(29.0, 30.0), Span(33.0, 33.2), Span(61.0, 62.0), Span(75.0, 80.0)]
    assert plan_pieces(pauses, 100.0, 30.0) == [Span(0.0, 29.5), Span(29.5, 61.5), Span(61.5, 100.0)]


def test_without_a_long_pause_the_longest_short_one_is_used_and_without_any_the_due_time():
    assert plan_pieces([Span(25.0, 25.2), Span(31.0, 31.1)], 80.0, 30.0)[0] == Span(0.0, 25.1)
    assert plan_pieces([], 95.0, 30.0) == [Span(0.0, 30.0), Span(30.0, 60.0), Span(60.0, 95.0)]


def test_a_short_recording_is_one_piece():
    assert plan_pieces([Span(10.0, 12.0)], 44.0, 30.0) == [Span(0.0, 44.0)]


# --- two real workers --------------------------------------------------------------------------------


@pytest.fixture
def long_recording(media_server):
    """About 3 minutes: the fixtures one after another, 1 s apart; and what it says."""
    pieces, words = [], []
    while sum(len(piece) for piece in pieces) < 170 * RATE:
        for name in SPOKEN:
            pieces += [fixture_audio(name), silence(1.0)]
            words.append(FIXTURE_TEXT[name])
    write_wav(media_server.directory / "long.wav", np.concatenate(pieces))
    return media_server.url("long.wav"), " ".join(words)


@pytest.fixture
def workers(redis):
    started = []
    yield started
    for worker in started:
        stop_process(worker)


@pytest.fixture
def two_workers(redis, make_client, workers):
    client = make_client(CHUNK_THRESHOLD_SECONDS="60", CHUNK_SECONDS="30", WHISPER_CPU_THREADS="1")
    workers.append(start_worker(redis, expect=1, stderr=subprocess.DEVNULL))
    workers.append(start_worker(redis, expect=2, stderr=subprocess.DEVNULL))
    return client


def pro(client) -> dict:
    _, key = client.application.extensions["ytcaption"].users.create("pieces@example.com", "pro")
    return {"Authorization": f"Bearer {key}"}


def test_two_workers_share_a_long_recording(two_workers, long_recording, redis):
    client, (url, words) = two_workers, long_recording
    headers = pro(client)
    job_id = submit(client, headers, url).get_json()["job_id"]
    wait_for(lambda: status(client, headers, job_id)["status"] in ("completed", "failed"), timeout=600,
             message="the job to end")
    body = status(client, headers, job_id)
    assert body["status"] == "completed", body.get("error")
    result = body["result"]
    assert result["pieces"] >= 4 and result["speech_detected"]

    # Some pieces were transcribed by the other worker, through their own jobs.
    piece_jobs = Job.fetch_many([piece_job_id(job_id, index) for index in range(result["pieces"])],
                                connection=redis)
    done_by_piece_jobs = [j for j in piece_jobs if j is not None and j.get_status() == "finished"
                          and "segments" in (j.return_value() or {})]
    assert done_by_piece_jobs, [j and (j.get_status(), j.return_value()) for j in piece_jobs]

    transcript = client.get(f"/api/v1/transcriptions/{result['transcription_id']}", headers=headers).get_json()
    segments = transcript["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    # The live events had every segment, in time order, as the pieces came in (app.core.events).
    told = [data for _, event, data in events.read(redis, job_id, "0", None) if event == "segment"]
    assert [(s["id"], s["start"], s["text"]) for s in told] == [(s["id"], s["start"], s["text"]) for s in segments]
    # In order, no overlap at the cuts, nothing after the end; the words are all there once.
    assert all(a["end"] <= b["start"] + 0.01 for a, b in zip(segments, segments[1:]))
    assert segments[-1]["end"] <= transcript["duration"] and transcript["duration"] > 170
    assert word_error_rate(words, transcript["text"]) < 0.15, transcript["text"]
    assert transcript["speech_seconds"] > 150

    # Nothing is left behind in Redis: the pieces' audio, claims and results are gone.
    assert not list(redis.scan_iter(f"{PieceStore(redis, job_id).prefix}:*"))


def test_cancelling_a_shared_job_stops_its_pieces(two_workers, long_recording, redis):
    client, (url, _) = two_workers, long_recording
    headers = pro(client)
    job_id = submit(client, headers, url).get_json()["job_id"]
    wait_for(lambda: redis.exists(f"rq:job:{piece_job_id(job_id, 0)}"), timeout=300,
             message="the job to be cut into pieces")
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code in (200, 202)
    wait_for(lambda: status(client, headers, job_id)["status"] == "cancelled", timeout=60,
             message="the job to be cancelled")

    def pieces_ended() -> bool:
        states = [redis.hget(f"rq:job:{piece_job_id(job_id, index)}", "status") for index in range(8)]
        return all(state in (None, b"finished", b"failed", b"stopped", b"canceled") for state in states)

    wait_for(pieces_ended, timeout=120, message="every piece job to end")
    wait_for(lambda: not list(redis.scan_iter(f"{PieceStore(redis, job_id).prefix}:*audio")), timeout=60,
             message="the pieces' audio to be deleted")


def test_a_piece_whose_worker_dies_is_taken_over(two_workers, workers, long_recording, redis):
    """The worker transcribing a piece is killed with its horse (a lost machine): the job still completes."""
    client, (url, words) = two_workers, long_recording
    headers = pro(client)
    job_id = submit(client, headers, url).get_json()["job_id"]

    def piece_running_elsewhere() -> int | None:
        parent = redis.hget(f"rq:job:{job_id}", "worker_name")
        for index in range(8):
            key = f"rq:job:{piece_job_id(job_id, index)}"
            state, worker = redis.hmget(key, "status", "worker_name")
            if state == b"started" and worker and worker != parent:
                return index
        return None

    wait_for(piece_running_elsewhere, timeout=300, interval=0.1, message="a piece to run on the other worker")
    helper_name = redis.hget(f"rq:job:{piece_job_id(job_id, piece_running_elsewhere())}", "worker_name").decode()
    helper_pid = int(redis.hget(f"rq:worker:{helper_name}", "pid"))
    victim = next(worker for worker in workers if worker.pid == helper_pid)
    for pid in [horse_of(victim.pid), victim.pid]:
        if pid:
            os.kill(pid, signal.SIGKILL)
    victim.wait()

    wait_for(lambda: status(client, headers, job_id)["status"] in ("completed", "failed"), timeout=600,
             message="the job to end")
    body = status(client, headers, job_id)
    assert body["status"] == "completed", body.get("error")
    transcript = client.get(f"/api/v1/transcriptions/{body['result']['transcription_id']}", headers=headers).get_json()
    assert word_error_rate(words, transcript["text"]) < 0.15, transcript["text"]
