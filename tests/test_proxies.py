"""YTDLP_PROXIES: a job's downloads go out through a real proxy, the next one when a proxy fails,
and each proxy's successes and failures are counted in /metrics, named without credentials."""

from __future__ import annotations

import base64
import socket

import pytest

from app.core.errors import TransientDownloadError
from app.core.settings import Settings
from tests.forward_proxy import ForwardProxy
from tests.helpers import status, submit
from workers import ytdlp
from workers.download import fetch_media

#: The proxy's password: percent-encoded in YTDLP_PROXIES (a comma would split the list).
PASSWORD = "pa,ss-s3cret"


def closed_port() -> int:
    """A loopback port nothing listens on: a proxy that refuses every connection."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxy_counters(client) -> dict[tuple[str, str], float]:
    """``ytcaption_proxy_downloads_total`` from /metrics, by (proxy, outcome)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").get_data(as_text=True)
    return {(sample.labels["proxy"], sample.labels["outcome"]): sample.value
            for family in text_string_to_metric_families(text) if family.name == "ytcaption_proxy_downloads"
            for sample in family.samples if sample.name.endswith("_total")}


def test_a_job_downloads_through_the_proxy_with_its_credentials(make_client, make_user, media_server, run_worker,
                                                                capfd):
    media_port = media_server.httpd.server_address[1]
    with ForwardProxy() as proxy:
        client = make_client(YTDLP_PROXIES=f"http://ytc:{PASSWORD.replace(',', '%2C')}@127.0.0.1:{proxy.port}",
                             METRICS_PUBLIC="true")
        headers = make_user("pro")[1]
        job_id = submit(client, headers, media_server.url("fox.m4a", via="proxy")).get_json()["job_id"]
        run_worker()
        body = status(client, headers, job_id)
    assert body["status"] == "completed", body
    print(f"the proxy saw: {proxy.requests}")
    # The egress proxy checked the URL, then asked the proxy for a tunnel to the checked address.
    assert proxy.requests and {target for _, target, _ in proxy.requests} == {f"127.0.0.1:{media_port}"}
    assert {method for method, _, _ in proxy.requests} == {"CONNECT"}
    expected = "Basic " + base64.b64encode(f"ytc:{PASSWORD}".encode()).decode()
    assert {authorization for _, _, authorization in proxy.requests} == {expected}
    assert media_server.requests_for("via=proxy")
    assert proxy_counters(client) == {(f"http://127.0.0.1:{proxy.port}", "success"): 1.0}
    logged = capfd.readouterr()
    assert "s3cret" not in logged.out + logged.err


@pytest.mark.parametrize("first", ["closed-port", "407", "502"])
def test_a_job_goes_through_the_next_proxy_when_the_first_fails(make_client, make_user, media_server, run_worker,
                                                                first):
    with ForwardProxy(refuse=None if first == "closed-port" else int(first)) as failing, ForwardProxy() as working:
        first_port = closed_port() if first == "closed-port" else failing.port
        client = make_client(YTDLP_PROXIES=f"http://127.0.0.1:{first_port},http://127.0.0.1:{working.port}",
                             METRICS_PUBLIC="true")
        headers = make_user("pro")[1]
        # The first job of this Redis starts at the first proxy (the turn counter is new).
        job_id = submit(client, headers, media_server.url("fox.m4a", via=f"second-{first}")).get_json()["job_id"]
        run_worker()
        body = status(client, headers, job_id)
    assert body["status"] == "completed", body
    assert body["attempt"] == 1  # the next proxy was tried within the attempt, not by a retry
    assert working.requests and media_server.requests_for(f"via=second-{first}")
    assert proxy_counters(client) == {(f"http://127.0.0.1:{first_port}", "proxy_error"): 1.0,
                                      (f"http://127.0.0.1:{working.port}", "success"): 1.0}


def test_a_youtube_download_tries_every_proxy_then_fails_as_transient(tmp_path, redis, config):
    """YouTube URLs go to yt-dlp's own proxy option (no egress proxy): a refused connection and a
    CONNECT answered 502 are proxy failures, each proxy is tried once, and the job will be retried."""
    with ForwardProxy(refuse=502) as gateway:
        settings = Settings.load({"YTDLP_PROXIES": f"socks5://user:{PASSWORD.replace(',', '%2C')}@127.0.0.1:"
                                                   f"{closed_port()},http://127.0.0.1:{gateway.port}"})
        with pytest.raises(TransientDownloadError) as caught:
            fetch_media("https://www.youtube.com/watch?v=jNQXAC9IVRw", tmp_path, settings, max_duration=600,
                        connection=redis)
    socks, http = settings.proxies
    print(caught.value.message)
    assert type(caught.value) is TransientDownloadError
    assert socks.label in caught.value.message and http.label in caught.value.message
    assert "s3cret" not in caught.value.message
    assert [target for _, target, _ in gateway.requests][:1] == ["www.youtube.com:443"]
    assert {key.decode(): int(value) for key, value in redis.hgetall("ytcaption:metrics:proxy_downloads").items()} == {
        f"{socks.label}|proxy_error": 1, f"{http.label}|proxy_error": 1}


def test_jobs_start_at_the_next_proxy_in_turn(redis):
    settings = Settings.load({"YTDLP_PROXIES": "http://a.example:1,http://b.example:2,socks5://c.example:3"})
    starts = [ytdlp.proxy_order(settings.proxies, redis)[0].host for _ in range(4)]
    assert starts == ["a.example", "b.example", "c.example", "a.example"]
    assert [proxy.host for proxy in ytdlp.proxy_order(settings.proxies, redis)] == ["b.example", "c.example",
                                                                                    "a.example"]


def test_non_youtube_downloads_use_only_the_http_proxies():
    settings = Settings.load({"YTDLP_PROXIES": "socks5://a.example:1,http://b.example:2,https://c.example:3"})
    assert [proxy.label for proxy in ytdlp.egress_proxies(settings)] == ["http://b.example:2"]


def test_a_bot_check_sends_the_download_through_the_next_proxy(tmp_path, redis, media_server, monkeypatch):
    """What YouTube's bot check does to a download cannot be had on loopback: here the media server refuses
    the first request (503), and the classifier is made to take that refusal for YouTube's bot check."""
    from app.core.errors import YouTubeBotCheck
    from workers import download

    monkeypatch.setattr(download, "classify", lambda exc: YouTubeBotCheck())
    with ForwardProxy() as first, ForwardProxy() as second:
        settings = Settings.load({"ALLOWED_URL_HOSTS": "127.0.0.1:*",
                                  "YTDLP_PROXIES": f"http://127.0.0.1:{first.port},http://127.0.0.1:{second.port}"})
        media = fetch_media(media_server.url("fox.m4a", fail=1, token=tmp_path.name), tmp_path, settings,
                            max_duration=600, connection=redis)
    assert media.path.exists()
    assert first.requests and second.requests
    assert {key.decode(): int(value) for key, value in redis.hgetall("ytcaption:metrics:proxy_downloads").items()} == {
        f"http://127.0.0.1:{first.port}|bot_check": 1, f"http://127.0.0.1:{second.port}|success": 1}


def test_bot_checks_through_every_proxy_fail_the_attempt_as_a_bot_check(tmp_path, redis, media_server, monkeypatch):
    from app.core.errors import YouTubeBotCheck
    from workers import download

    monkeypatch.setattr(download, "classify", lambda exc: YouTubeBotCheck())
    with ForwardProxy() as first, ForwardProxy() as second:
        settings = Settings.load({"ALLOWED_URL_HOSTS": "127.0.0.1:*",
                                  "YTDLP_PROXIES": f"http://127.0.0.1:{first.port},http://127.0.0.1:{second.port}"})
        with pytest.raises(YouTubeBotCheck) as caught:
            fetch_media(media_server.url("fox.m4a", fail=100, token=tmp_path.name), tmp_path, settings,
                        max_duration=600, connection=redis)
    assert caught.value.transient  # the job-level retry applies
    assert {key.decode(): int(value) for key, value in redis.hgetall("ytcaption:metrics:proxy_downloads").items()} == {
        f"http://127.0.0.1:{first.port}|bot_check": 1, f"http://127.0.0.1:{second.port}|bot_check": 1}
