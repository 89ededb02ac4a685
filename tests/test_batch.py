"""Batches: one job per video on the batch queue, failures isolated, quota charged per video."""

import pytest

from tests.helpers import status

BATCH = "/api/v1/transcribe/async/batch"


def submit_batch(client, headers, urls):
    return client.post(BATCH, json={"videos": [{"youtube_url": url} for url in urls]}, headers=headers)


def test_three_videos_one_broken(client, make_user, media_server, run_worker, services):
    _, headers = make_user("pro")
    urls = [media_server.url("fox.m4a"), media_server.url("missing-video.webm"), media_server.url("queue.webm")]
    response = submit_batch(client, headers, urls)
    assert response.status_code == 202
    body = response.get_json()
    assert body["total"] == 3 and body["queue"] == "batch"
    assert body["status_url"] == f"{BATCH}/{body['batch_id']}"
    assert services.queues["batch"].count == 3 and services.queues["express"].count == 0

    pending = client.get(body["status_url"], headers=headers).get_json()
    assert (pending["status"], pending["progress"], pending["counts"]["pending"]) == ("pending", 0, 3)

    run_worker()
    done = client.get(body["status_url"], headers=headers).get_json()
    assert (done["status"], done["progress"]) == ("completed", 100)
    assert (done["counts"]["completed"], done["counts"]["failed"]) == (2, 1)
    videos = done["videos"]
    assert [v["status"] for v in videos] == ["completed", "failed", "completed"]
    assert videos[1]["error"]["type"] == "video_unavailable"
    assert videos[0]["result"]["transcription_id"] and videos[2]["result"]["total_segments"] >= 1
    assert status(client, headers, videos[0]["job_id"])["status"] == "completed"
    # The failed video's unit came back; the two others were charged.
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 2


def test_quota_is_charged_per_video_all_or_nothing(make_user, config, monkeypatch, media_server):
    from app import create_app

    monkeypatch.setenv("QUOTA_FREE", "3")
    client = create_app({**config, "QUOTA_FREE": "3"}).test_client()
    user, key = client.application.extensions["ytcaption"].users.create("b@example.com", "free")
    headers = {"Authorization": f"Bearer {key}"}
    assert submit_batch(client, headers, [media_server.url("fox.m4a")] * 2).status_code == 202
    refused = submit_batch(client, headers, [media_server.url("fox.m4a")] * 2)
    assert refused.status_code == 429 and refused.get_json()["error"] == "quota_exceeded"
    assert client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"] == 2


@pytest.mark.parametrize("payload, code, words", [
    ({"videos": []}, "validation_error", "videos: List should have at least 1 item"),
    ({"videos": [{"youtube_url": "https://youtu.be/dQw4w9WgXcQ"}] * 11}, "validation_error", "got 11"),
    ({"videos": "x"}, "validation_error", "videos"),
    ({}, "validation_error", "videos"),
    ({"videos": [{"youtube_url": "https://youtu.be/dQw4w9WgXcQ"}, {"youtube_url": "https://vimeo.com/1"}]},
     "host_not_allowed", "videos[1]"),
    ({"videos": [{"youtube_url": "https://youtu.be/dQw4w9WgXcQ", "language": "xx"}]}, "unknown_language",
     "videos[0]"),
])
def test_a_bad_batch_is_refused_whole(client, make_user, services, payload, code, words):
    _, headers = make_user("free")
    response = client.post(BATCH, json=payload, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == code and words in response.get_json()["message"]
    assert services.queues["batch"].count == 0


def test_cancel_cancels_the_rest_and_ownership(client, make_user, media_server, services):
    _, alice = make_user("pro")
    _, bob = make_user("pro")
    batch = submit_batch(client, alice, [media_server.url("fox.m4a")] * 3).get_json()
    url = batch["status_url"]
    assert client.get(url, headers=bob).status_code == 404
    assert client.delete(url, headers=bob).status_code == 404
    answer = client.delete(url, headers=alice)
    assert answer.status_code == 200 and answer.get_json()["cancelled"] == 3
    after = client.get(url, headers=alice).get_json()
    assert (after["status"], after["counts"]["cancelled"]) == ("cancelled", 3)
    assert services.queues["batch"].count == 0
    assert client.get(f"{BATCH}/no-such-batch", headers=alice).status_code == 404
