"""Never the same work twice (app.core.sharing): identical submits in flight share one job, a completed
transcript answers identical submits at once; each user still has a job and a transcript of their own."""

import json
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.job import Job

from app.core import sharing
from tests.helpers import FIXTURE_TEXT, start_worker, status, stop_process, submit, wait_for, word_error_rate
from tests.test_processes import create_user

YOUTUBE = "https://www.youtube.com/watch?v=jNQXAC9IVRw"


def used(client, headers) -> int:
    return client.get("/api/v1/me", headers=headers).get_json()["quota"]["used"]


def test_identical_submits_share_one_queued_job_and_each_user_sees_only_their_own(client, make_user, services):
    _, alice = make_user("pro")
    _, bob = make_user("pro")
    first = submit(client, alice, YOUTUBE)
    second = submit(client, bob, YOUTUBE)
    assert first.status_code == second.status_code == 202
    leader, follower = first.get_json()["job_id"], second.get_json()["job_id"]
    assert leader != follower
    assert services.queues["express"].job_ids == [leader]  # one job to run
    mine = status(client, bob, follower)
    assert (mine["job_id"], mine["status"], mine["stage"], mine["position"]) == (follower, "pending", "queued", 0)
    for headers, job_id in ((alice, follower), (bob, leader)):
        assert client.get(f"/api/v1/transcribe/async/status/{job_id}", headers=headers).status_code == 404
    assert used(client, alice) == used(client, bob) == 1  # each submit is a job of its own
    assert services.redis.hget(sharing.STATS, "coalesced") == b"1"


@pytest.mark.parametrize("second", [
    {"cache": False},  # asked to run afresh
    {"language": "en"},  # not the same request: auto-detection
    {"word_timestamps": True},
])
def test_a_different_request_or_cache_false_gets_a_run_of_its_own(client, make_user, services, second):
    _, alice = make_user("pro")
    jobs = [submit(client, alice, YOUTUBE).get_json()["job_id"],
            submit(client, alice, YOUTUBE, **second).get_json()["job_id"]]
    assert services.queues["express"].job_ids == jobs


def test_the_free_queue_and_the_express_queue_do_not_share(client, make_user, services):
    _, free = make_user("free")
    _, pro = make_user("pro")
    assert submit(client, free, YOUTUBE).status_code == submit(client, pro, YOUTUBE).status_code == 202
    assert services.queues["standard"].count == services.queues["express"].count == 1


def test_cancelling_a_follower_leaves_the_work_to_the_others(client, make_user, services):
    (_, alice), (_, bob), (_, carol) = make_user("pro"), make_user("pro"), make_user("pro")
    leader = submit(client, alice, YOUTUBE).get_json()["job_id"]
    bobs = submit(client, bob, YOUTUBE).get_json()["job_id"]
    carols = submit(client, carol, YOUTUBE).get_json()["job_id"]

    answer = client.delete(f"/api/v1/transcribe/async/cancel/{bobs}", headers=bob)
    assert answer.status_code == 200 and answer.get_json()["status"] == "cancelled"
    assert status(client, bob, bobs)["status"] == "cancelled"
    assert used(client, bob) == 0  # it never ran: its unit comes back
    assert services.queues["express"].job_ids == [leader]
    assert status(client, carol, carols)["status"] == "pending"
    assert sharing.leader_of(services.redis, carols) == leader


def test_cancelling_the_leader_hands_the_work_to_its_first_follower(client, make_user, services):
    (_, alice), (_, bob), (_, carol) = make_user("pro"), make_user("pro"), make_user("pro")
    submit(client, make_user("pro")[1], YOUTUBE, cache=False)  # another job, ahead in the queue
    leader = submit(client, alice, YOUTUBE).get_json()["job_id"]
    followers = {submit(client, headers, YOUTUBE).get_json()["job_id"]: headers for headers in (bob, carol)}

    assert client.delete(f"/api/v1/transcribe/async/cancel/{leader}", headers=alice).status_code == 200
    queued = services.queues["express"].job_ids
    assert len(queued) == 2 and queued[0] in followers  # at the front: it waited as long as the leader
    heir = queued[0]
    other = next(job_id for job_id in followers if job_id != heir)
    assert sharing.leader_of(services.redis, other) == heir
    for job_id, headers in followers.items():
        assert status(client, headers, job_id)["status"] == "pending"
    # A new identical submit follows the heir now.
    late = submit(client, make_user("pro")[1], YOUTUBE).get_json()["job_id"]
    assert sharing.leader_of(services.redis, late) == heir


def test_twenty_identical_submits_from_five_users_download_and_transcribe_once(api_url, media_server, redis):
    """Submitted together over HTTP while no worker runs, then one worker: one download, one transcription,
    twenty completed jobs, each user with their own transcripts and nobody else's."""
    keys = [create_user("pro", f"share{index}@example.com") for index in range(5)]
    url = media_server.url("fox.m4a", shared="twenty")
    job_ids: dict[str, str] = {}
    lock = threading.Lock()

    def submit_as(key: str) -> None:
        response = requests.post(f"{api_url}/api/v1/transcribe/async/submit", json={"youtube_url": url},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert response.status_code == 202, response.text
        with lock:
            job_ids[response.json()["job_id"]] = key

    threads = [threading.Thread(target=submit_as, args=(keys[index % 5],)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(job_ids) == 20
    assert Queue("express", connection=redis).count == 1

    worker = start_worker(redis)
    try:
        def all_ended() -> bool:
            jobs = Job.fetch_many(list(job_ids), connection=redis)
            return all(job.get_status(refresh=False) in ("finished", "failed") for job in jobs)

        wait_for(all_ended, timeout=240, interval=0.5, message="the twenty jobs to end")
        workers = Worker.all(connection=redis)
        assert sum(found.successful_job_count for found in workers) == 1  # one transcription
        # One download: the requests one job makes (yt-dlp's look at the URL, then the download).
        first = {"Authorization": f"Bearer {keys[0]}"}
        alone = requests.post(f"{api_url}/api/v1/transcribe/async/submit", headers=first, timeout=60,
                              json={"youtube_url": media_server.url("fox.m4a", shared="alone")}).json()
        wait_for(lambda: _ended(api_url, first, alone["job_id"]), timeout=120, interval=0.2,
                 message="the job alone to end")
    finally:
        stop_process(worker)
    assert len(media_server.requests_for("shared=twenty")) == len(media_server.requests_for("shared=alone")) > 0

    for job_id, key in job_ids.items():
        headers = {"Authorization": f"Bearer {key}"}
        body = requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}", headers=headers, timeout=30).json()
        assert body["status"] == "completed" and body["result"]["transcription_id"] == job_id, body
        transcript = requests.get(f"{api_url}/api/v1/transcriptions/{job_id}", headers=headers, timeout=30).json()
        assert word_error_rate(FIXTURE_TEXT["fox.m4a"], transcript["text"]) < 0.3
        assert transcript["job_id"] == job_id
        stranger = next(other for other in keys if other != key)
        for path in (f"transcribe/async/status/{job_id}", f"transcriptions/{job_id}"):
            answer = requests.get(f"{api_url}/api/v1/{path}", headers={"Authorization": f"Bearer {stranger}"},
                                  timeout=30)
            assert answer.status_code == 404


def test_a_completed_upload_answers_the_same_upload_at_once_from_the_cache(api_url, worker_process, media_server):
    audio = (media_server.directory / "fox.m4a").read_bytes()
    alice = {"Authorization": f"Bearer {create_user('free', 'cache-alice@example.com')}"}
    bob = {"Authorization": f"Bearer {create_user('free', 'cache-bob@example.com')}"}

    def upload(headers: dict, **fields) -> requests.Response:
        return requests.post(f"{api_url}/api/v1/transcribe/async/submit", headers=headers, data=fields,
                             files={"file": ("fox.m4a", audio, "audio/mp4")}, timeout=60)

    first = upload(alice)
    assert first.status_code == 202, first.text
    done = wait_for(lambda: _ended(api_url, alice, first.json()["job_id"]), timeout=180, interval=0.2,
                    message="the first upload's job to end")
    assert done["status"] == "completed", done

    started = time.monotonic()
    second = upload(bob)
    assert second.status_code == 200, second.text
    body = second.json()
    job_id = body["job_id"]
    assert (body["status"], body["cached"], body["transcription_id"]) == ("completed", True, job_id)
    assert time.monotonic() - started < 30  # at once: no worker ran (the job's status says so below)
    state = requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}", headers=bob, timeout=30).json()
    assert state["status"] == "completed" and state["cached"] is True and state["result"]["transcription_id"] == job_id
    mine = requests.get(f"{api_url}/api/v1/transcriptions/{job_id}", headers=bob, timeout=30).json()
    theirs = requests.get(f"{api_url}/api/v1/transcriptions/{done['job_id']}", headers=alice, timeout=30).json()
    assert mine["text"] == theirs["text"] and mine["job_id"] == job_id
    assert requests.get(f"{api_url}/api/v1/transcriptions/{done['job_id']}", headers=bob, timeout=30).status_code == 404
    me = requests.get(f"{api_url}/api/v1/me", headers=bob, timeout=30).json()
    assert me["quota"]["used"] == 0  # QUOTA_CACHE_HIT_COST: 0 by default
    # Nothing says whose transcript it was.
    assert done["job_id"] not in json.dumps(state) + json.dumps(mine)

    # "cache": false runs afresh, and its transcript answers the next submits.
    fresh = upload(bob, cache="false")
    assert fresh.status_code == 202 and fresh.json()["status"] == "accepted"
    rerun = wait_for(lambda: _ended(api_url, bob, fresh.json()["job_id"]), timeout=180, interval=0.2,
                     message="the fresh run to end")
    assert rerun["status"] == "completed"
    later = upload(alice)
    assert later.status_code == 200 and later.json()["cached"] is True
    copied = _ended(api_url, alice, later.json()["job_id"])["result"]
    assert copied["timings"] == rerun["result"]["timings"] != done["result"]["timings"]  # the fresh run's


def _ended(api_url: str, headers: dict, job_id: str) -> dict | None:
    body = requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}", headers=headers, timeout=30).json()
    return body if body["status"] in ("completed", "failed", "cancelled") else None


def test_a_failure_of_the_shared_work_is_every_jobs_failure(client, make_user, media_server, run_worker):
    (_, alice), (_, bob) = make_user("pro"), make_user("pro")
    url = media_server.url("missing.webm")
    jobs = {submit(client, headers, url).get_json()["job_id"]: headers for headers in (alice, bob)}
    run_worker()
    errors = [status(client, headers, job_id) for job_id, headers in jobs.items()]
    assert [body["status"] for body in errors] == ["failed", "failed"]
    assert errors[0]["error"] == errors[1]["error"] and errors[0]["error"]["type"] == "video_unavailable"
    assert used(client, alice) == used(client, bob) == 0  # a failed job's unit comes back, to each


def test_metrics_count_cache_misses_and_shared_submits(make_client, make_user):
    client = make_client(METRICS_PUBLIC="true")
    services = client.application.extensions["ytcaption"]
    _, alice = make_user("pro")
    for _ in range(3):
        assert submit(client, alice, YOUTUBE).status_code == 202
    assert submit(client, alice, YOUTUBE, cache=False).status_code == 202  # not counted
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").get_data(
        as_text=True))}
    cache = {sample.labels["outcome"]: sample.value for sample in families["ytcaption_result_cache"].samples}
    assert cache == {"hit": 0, "miss": 3}
    assert families["ytcaption_coalesced_submits"].samples[0].value == 2
    assert services.queues["express"].count == 2


def test_a_follower_has_its_leaders_events_so_far_and_from_then_on_but_its_own_end(client, make_user, services):
    from app.core import events

    connection = services.redis
    _, alice = make_user("pro")
    _, bob = make_user("pro")
    leader = submit(client, alice, YOUTUBE).get_json()["job_id"]
    events.publish(connection, leader, "stage", {"stage": "downloading"})
    follower = submit(client, bob, YOUTUBE).get_json()["job_id"]
    events.publish(connection, leader, "segment", {"id": 0, "start": 0.0, "end": 1.0, "text": "Hello"})
    events.publish(connection, leader, "completed", {"status": "completed"})  # a final event is each job's own

    def kinds(job_id: str) -> list[tuple[str, dict]]:
        return [(event, data) for _, event, data in events.read(connection, job_id, "0", None)]

    assert kinds(follower) == [("stage", {"stage": "downloading"}),
                               ("segment", {"id": 0, "start": 0.0, "end": 1.0, "text": "Hello"})]
    assert [event for event, _ in kinds(leader)] == ["stage", "segment", "completed"]


def test_cancelling_the_running_leader_hands_the_work_over_and_the_follower_completes(api_url, media_server,
                                                                                      worker_process):
    alice = {"Authorization": f"Bearer {create_user('pro', 'running-alice@example.com')}"}
    bob = {"Authorization": f"Bearer {create_user('pro', 'running-bob@example.com')}"}
    url = media_server.url("lecture.webm", delay=0.5)  # 13 chunks, some 6 s: the leader runs while we look

    def submit_as(headers: dict) -> str:
        answer = requests.post(f"{api_url}/api/v1/transcribe/async/submit", json={"youtube_url": url},
                               headers=headers, timeout=60)
        assert answer.status_code == 202, answer.text
        return answer.json()["job_id"]

    def state(headers: dict, job_id: str) -> dict:
        return requests.get(f"{api_url}/api/v1/transcribe/async/status/{job_id}", headers=headers, timeout=30).json()

    leader = submit_as(alice)
    wait_for(lambda: state(alice, leader)["status"] == "processing", timeout=120, interval=0.1,
             message="the leader to run")
    follower = submit_as(bob)
    assert state(bob, follower)["status"] == "processing"  # the work it follows runs
    cancel = requests.delete(f"{api_url}/api/v1/transcribe/async/cancel/{leader}", headers=alice, timeout=30)
    assert cancel.status_code == 202
    done = wait_for(lambda: _ended(api_url, bob, follower), timeout=240, interval=0.2,
                    message="the follower to end")
    assert done["status"] == "completed" and done["result"]["transcription_id"] == follower, done
    assert state(alice, leader)["status"] == "cancelled"
    transcript = requests.get(f"{api_url}/api/v1/transcriptions/{follower}", headers=bob, timeout=30).json()
    assert word_error_rate(FIXTURE_TEXT["lecture.webm"], transcript["text"]) < 0.2


def test_the_videos_of_a_batch_share_work_as_single_submits_do(client, make_user, services):
    _, alice = make_user("pro")
    other = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    videos = [{"youtube_url": YOUTUBE}, {"youtube_url": YOUTUBE}, {"youtube_url": other},
              {"youtube_url": other, "cache": False}]
    answer = client.post("/api/v1/transcribe/async/batch", json={"videos": videos}, headers=alice)
    assert answer.status_code == 202, answer.get_json()
    first, second, third, fourth = answer.get_json()["job_ids"]
    assert services.queues["batch"].job_ids == [first, third, fourth]
    assert sharing.leader_of(services.redis, second) == first
    assert used(client, alice) == 4
    body = client.get(f"/api/v1/transcribe/async/batch/{answer.get_json()['batch_id']}", headers=alice).get_json()
    assert [video["status"] for video in body["videos"]] == ["pending"] * 4
