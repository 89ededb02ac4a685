"""rq-dashboard at /rq: admins only, same Redis, and it renders in a real (headless) Chromium."""

import base64
import os
import shutil

import pytest

from app.core.redis_server import free_port
from tests.helpers import start_api, status, stop_process, submit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def basic(password: str, user: str = "admin") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def admin_key(services):
    return services.users.create("root@example.com", "free", role="admin")[1]


def test_dashboard_needs_admin_credentials(client, make_user, admin_key):
    user_key = make_user("enterprise")[1]["Authorization"].split()[1]
    for headers in ({}, basic("wrong"), basic(user_key), {"Authorization": f"Bearer {user_key}"}):
        response = client.get("/rq/", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.get_json()["error"] == "unauthorized"
    assert client.get("/rq/0/data/queues.json").status_code == 401
    assert client.get("/rq/", headers=basic(admin_key)).status_code == 200
    assert client.get("/rq/", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200


def test_dashboard_json_lists_the_queues_and_a_finished_job(client, make_user, admin_key, media_server,
                                                           run_worker):
    _, headers = make_user("pro")
    job_id = submit(client, headers, media_server.url("fox.m4a")).get_json()["job_id"]
    submit(client, make_user("free")[1], media_server.url("fox.m4a"))
    client.post("/api/v1/transcribe/async/batch", headers=headers,
                json={"videos": [{"youtube_url": media_server.url("fox.m4a")}]})
    run_worker(["express"])
    assert status(client, headers, job_id)["status"] == "completed"

    queues = client.get("/rq/0/data/queues.json", headers=basic(admin_key)).get_json()["queues"]
    assert {"express", "standard", "batch"} <= {queue["name"] for queue in queues}
    finished = client.get("/rq/0/data/jobs/express/finished/10/asc/1.json", headers=basic(admin_key)).get_json()
    assert [job["id"] for job in finished["jobs"]] == [job_id]


def test_a_cancelled_job_is_canceled_in_the_dashboard_too(client, make_user, admin_key):
    _, headers = make_user("free")
    job_id = submit(client, headers, "https://youtu.be/dQw4w9WgXcQ").get_json()["job_id"]
    assert client.delete(f"/api/v1/transcribe/async/cancel/{job_id}", headers=headers).status_code == 200
    canceled = client.get("/rq/0/data/jobs/standard/canceled/10/asc/1.json", headers=basic(admin_key)).get_json()
    assert [job["id"] for job in canceled["jobs"]] == [job_id]
    failed = client.get("/rq/0/data/jobs/standard/failed/10/asc/1.json", headers=basic(admin_key)).get_json()
    assert failed["jobs"] == []


#: The routes of rq-dashboard 0.9 that change something, and the methods they take.
ACTIONS = [("POST", "/rq/queue/standard/queued/empty"), ("POST", "/rq/queue/standard/compact"),
           ("POST", "/rq/job/{job_id}/delete"), ("POST", "/rq/job/{job_id}/requeue"),
           ("POST", "/rq/requeue/standard"), ("GET", "/rq/requeue/standard")]
#: Those that only read: every other route, so that one a new rq-dashboard adds is looked at.
READS = {"queues_overview", "workers_overview", "jobs_overview", "job_view", "list_queues", "list_jobs", "job_info",
         "list_workers", "favicon", "static"}


def test_every_dashboard_route_either_only_reads_or_is_an_action(app):
    from app.dashboard import action_endpoints

    endpoints = {rule.endpoint.removeprefix("rq_dashboard.") for rule in app.url_map.iter_rules()
                 if rule.endpoint.startswith("rq_dashboard.")}
    actions = {endpoint.removeprefix("rq_dashboard.") for endpoint in action_endpoints(app, "rq_dashboard")}
    assert actions == {"delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue"}
    assert endpoints - actions == READS


@pytest.mark.parametrize("method, path", ACTIONS)
def test_a_dashboard_action_from_another_site_is_refused(client, make_user, admin_key, services, method, path):
    """An admin's browser sends its Basic credentials with a request a page on another site makes:
    an action needs an Origin (or, without one, a Referer) naming this server."""
    _, headers = make_user("free")
    job_id = submit(client, headers, "https://youtu.be/dQw4w9WgXcQ").get_json()["job_id"]
    queue = services.queues["standard"]
    for foreign in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {},
                    {"Referer": "http://evil.example/rq/"}, {"Origin": "http://localhost.evil.example"},
                    {"Origin": "http://evil.example", "Referer": "http://localhost/rq/"}):
        answer = client.open(path.format(job_id=job_id), method=method, headers={**basic(admin_key), **foreign})
        assert answer.status_code == 403, foreign
        assert answer.get_json()["error"] == "cross_site_request"
    assert queue.get_job_ids() == [job_id] and queue.fetch_job(job_id) is not None


def test_a_dashboard_action_from_its_own_pages_is_taken(client, make_user, admin_key, services):
    _, headers = make_user("free")
    first, second = (submit(client, headers, "https://youtu.be/dQw4w9WgXcQ", cache=False).get_json()["job_id"]
                     for _ in range(2))
    queue = services.queues["standard"]
    deleted = client.post(f"/rq/job/{first}/delete", headers={**basic(admin_key), "Origin": "http://localhost"})
    assert deleted.get_json() == {"status": "OK"} and queue.get_job_ids() == [second]
    emptied = client.post("/rq/queue/standard/queued/empty",
                          headers={**basic(admin_key), "Referer": "http://localhost/rq/0/view/jobs"})
    assert emptied.get_json() == {"status": "OK"} and queue.count == 0


def test_a_job_gone_or_not_failed_any_more_is_a_404_or_409_in_the_dashboard(client, make_user, admin_key):
    """The admin's page may show a job another admin has since deleted or requeued."""
    _, headers = make_user("free")
    queued = submit(client, headers, "https://youtu.be/dQw4w9WgXcQ").get_json()["job_id"]
    admin = {**basic(admin_key), "Origin": "http://localhost"}
    for method, path in (("GET", "/rq/0/view/job/gone"), ("GET", "/rq/0/data/job/gone.json"),
                         ("POST", "/rq/job/gone/requeue")):
        answer = client.open(path, method=method, headers=admin)
        assert (answer.status_code, answer.get_json()) == (404, {"error": "not_found", "message": "No job 'gone'."})
    requeued = client.post(f"/rq/job/{queued}/requeue", headers=admin)
    assert (requeued.status_code, requeued.get_json()["error"]) == (409, "job_not_failed")


@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_dashboard_renders_the_queues_in_headless_chromium(config, services, admin_key, media_server, make_user):
    from playwright.sync_api import sync_playwright

    from app import create_app

    client = create_app(config).test_client()
    for tier in ("pro", "free"):  # a job on express, one on standard, one on batch
        client.post("/api/v1/transcribe/async/submit", headers=make_user(tier)[1],
                    json={"youtube_url": media_server.url("fox.m4a")})
    client.post("/api/v1/transcribe/async/batch", headers=make_user("pro")[1],
                json={"videos": [{"youtube_url": media_server.url("fox.m4a")}]})
    port = free_port()
    api = start_api(port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            try:
                anonymous = browser.new_context()
                assert anonymous.request.get(f"http://127.0.0.1:{port}/rq/").status == 401
                context = browser.new_context(http_credentials={"username": "admin", "password": admin_key})
                page = context.new_page()
                # As a person types it, without the trailing slash.
                assert page.goto(f"http://127.0.0.1:{port}/rq").status == 200
                assert page.url == f"http://127.0.0.1:{port}/rq/"
                page.wait_for_selector("text=express", timeout=15_000)
                body = page.inner_text("body")
                for queue in ("express", "standard", "batch"):
                    assert queue in body
                page.screenshot(path=str(config["WORK_DIR"]) + "-dashboard.png")
                # The key in the URL, as people bookmark it: the browser signs in at /rq, then follows.
                typed = browser.new_context().new_page()
                assert typed.goto(f"http://admin:{admin_key}@127.0.0.1:{port}/rq").status == 200
                assert typed.url.endswith(f"127.0.0.1:{port}/rq/")
                typed.wait_for_selector("text=express", timeout=15_000)

                # The dashboard's own button works: its script POSTs, and Chromium sends the Origin.
                page.goto(f"http://127.0.0.1:{port}/rq/0/view/jobs/standard/queued/8/asc/1")
                page.click("#empty-btn")
                empty_url = f"http://127.0.0.1:{port}/rq/queue/standard/queued/empty"
                with page.expect_response(empty_url) as emptied:
                    page.click("#confirmation-modal-yes")
                assert emptied.value.status == 200 and services.queues["standard"].count == 0

                # A page on another origin (the media server's port) whose form POSTs to the dashboard,
                # in the browser that holds the admin's credentials: refused, the queue kept.
                target = f"http://127.0.0.1:{port}/rq/queue/batch/queued/empty"
                media_server.add("csrf.html", f'<form method="post" action="{target}"></form>'
                                              '<script>document.forms[0].submit()</script>'.encode())
                with page.expect_navigation(url=target) as attacked:
                    page.goto(media_server.url("csrf.html"))
                assert attacked.value.status == 403 and "cross_site_request" in page.inner_text("body")
                assert services.queues["batch"].count == 1
            finally:
                browser.close()
    finally:
        stop_process(api)


def test_with_sentinels_the_dashboard_asks_them_and_shows_no_password():
    from app.core.settings import Settings
    from app.dashboard import dashboard_config

    config = dashboard_config(Settings.load({"REDIS_SENTINELS": "10.0.0.5:26379,10.0.0.6:26379",
                                             "REDIS_SENTINEL_MASTER": "jobs", "REDIS_PASSWORD": "s3cret"}))
    assert config["RQ_DASHBOARD_REDIS_URL"].startswith("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/jobs/0?")
    assert "s3cret" not in config["RQ_DASHBOARD_REDIS_URL"]  # rq-dashboard shows this URL on its pages
    assert (config["RQ_DASHBOARD_REDIS_PASSWORD"], config["RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD"]) == ("s3cret", None)
