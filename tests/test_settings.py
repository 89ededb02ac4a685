import json
import subprocess
import sys

import pytest

from app.core.errors import ConfigurationError
from app.core.settings import Settings


@pytest.fixture
def bare_environment(monkeypatch):
    """No ytcaption setting in the environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults(bare_environment):
    settings = Settings.load()
    assert settings.redis_url is None
    assert settings.effective_redis_url.startswith("unix://") and settings.effective_redis_url.endswith("redis.sock")
    assert settings.result_ttl == 86400
    assert settings.whisper_model == "tiny.en"
    assert settings.allowed_models == {"tiny.en": "tiny.en"}
    assert settings.allowed_url_hosts == ()
    assert settings.whisper_compute_type == "int8"
    assert (settings.whisper_vad_filter, settings.max_duration_for("free"), settings.quota_for("pro")) == (
        True, 3600, 2000)
    assert (settings.whisper_temperature_fallback, settings.whisper_condition_on_previous_text) == (False, True)
    assert settings.whisper_batch_size == 8


def test_the_environment_is_read_and_overrides_win(bare_environment, monkeypatch):
    monkeypatch.setenv("RESULT_TTL", "120")
    monkeypatch.setenv("MAX_VIDEO_DURATION", "30")
    monkeypatch.setenv("WHISPER_VAD_FILTER", "false")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings.load({"RESULT_TTL": 60})
    assert (settings.result_ttl, settings.max_video_duration, settings.whisper_vad_filter, settings.log_level) == (
        60, 30, False, "DEBUG")
    assert settings.max_duration_for("free") == 30  # MAX_VIDEO_DURATION is every tier's ceiling


def test_an_empty_variable_means_the_default(bare_environment, monkeypatch):
    monkeypatch.setenv("RESULT_TTL", "")
    assert Settings.load().result_ttl == 86400


@pytest.mark.parametrize("name, value, words", [
    ("MAX_VIDEO_DURATION", "abc", "Setting MAX_VIDEO_DURATION='abc' is invalid: must be a whole number."),
    ("RESULT_TTL", "-5", "Setting RESULT_TTL='-5' is invalid: must be greater than 0."),
    ("JOB_MAX_RETRIES", "-1", "Setting JOB_MAX_RETRIES='-1' is invalid: must be 0 or more."),
    ("WHISPER_DEVICE", "tpu", "Setting WHISPER_DEVICE='tpu' is invalid: must be one of cpu, cuda, auto."),
    ("WHISPER_VAD_FILTER", "maybe", "Setting WHISPER_VAD_FILTER='maybe' is invalid: must be true or false."),
    ("LOG_LEVEL", "loud", "Setting LOG_LEVEL='LOUD' is invalid: must be one of DEBUG, INFO, WARNING, ERROR."),
])
def test_invalid_values_fail_with_a_sentence_naming_the_setting(bare_environment, monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        Settings.load()
    assert caught.value.message == words


def test_unknown_override_is_refused():
    with pytest.raises(ConfigurationError, match="Unknown setting 'REDIS'"):
        Settings.load({"REDIS": "x"})


def test_allowed_models_accept_names_and_paths():
    settings = Settings.load({"WHISPER_MODEL": "/models/large-v3-ct2",
                              "WHISPER_ALLOWED_MODELS": "tiny.en, small=/models/small-ct2"})
    assert settings.default_model_name == "large-v3-ct2"
    assert settings.allowed_models == {
        "large-v3-ct2": "/models/large-v3-ct2", "tiny.en": "tiny.en", "small": "/models/small-ct2",
    }


def test_allowed_url_hosts_are_lowercased():
    assert Settings.load({"ALLOWED_URL_HOSTS": "Media.Example.com, 127.0.0.1:8080, [::1]:*"}).allowed_url_hosts == (
        "media.example.com", "127.0.0.1:8080", "[::1]:*")


@pytest.mark.parametrize("entry, words", [
    ("http://media.example.com", "no scheme, user or path"),
    ("::1", "in brackets"),
    ("media.example.com:0", "from 1 to 65535"),
    ("media.example.com:http", "from 1 to 65535"),
    ("media example.com", "not a host name"),
    ("[media.example.com]:80", "only an IPv6 address"),
])
def test_an_invalid_allowed_url_host_is_refused_with_a_sentence(entry, words):
    with pytest.raises(ConfigurationError, match=words):
        Settings.load({"ALLOWED_URL_HOSTS": f"youtube.example.com, {entry}"})


def test_a_child_gets_its_parents_settings_not_the_environment(bare_environment, monkeypatch):
    """The worker passes its Settings on: a child reads neither a changed nor a missing variable."""
    parent = Settings.load({"WHISPER_CPU_THREADS": 3, "ALLOWED_URL_HOSTS": "a.example,b.example",
                            "WHISPER_VAD_FILTER": True})
    monkeypatch.setenv("WHISPER_CPU_THREADS", "1")  # what the child's environment says
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from app.core.settings import Settings; "
                               "print(Settings.from_json(sys.stdin.read()).to_json())"],
        input=parent.to_json(), capture_output=True, text=True, check=True)
    assert Settings.from_json(child.stdout) == parent
    assert json.loads(child.stdout)["whisper_cpu_threads"] == 3


def test_settings_as_environment_variables_read_back_the_same(bare_environment, monkeypatch):
    settings = Settings.load({"ALLOWED_URL_HOSTS": "a.example,b.example", "WHISPER_VAD_FILTER": True,
                              "REDIS_URL": "redis://example:6379/0", "JOB_TIMEOUT_FACTOR": 1.5})
    for name, value in settings.to_environ().items():
        monkeypatch.setenv(name, value)
    assert Settings.load() == settings


def test_sentinels_are_host_and_port_pairs():
    settings = Settings.load({"REDIS_SENTINELS": "10.0.0.5:26379, sentinel-b:26380,[::1]:26381"})
    assert settings.sentinel_addresses == [("10.0.0.5", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    assert settings.redis_sentinel_master == "mymaster"


@pytest.mark.parametrize("value", ["sentinel-a", "sentinel-a:", "sentinel-a:0", "sentinel-a:65536", ":26379"])
def test_a_sentinel_without_host_and_port_is_refused(bare_environment, monkeypatch, value):
    monkeypatch.setenv("REDIS_SENTINELS", f"10.0.0.5:26379,{value}")
    with pytest.raises(ConfigurationError) as caught:
        Settings.load()
    assert caught.value.message.startswith(f"Setting REDIS_SENTINELS='10.0.0.5:26379,{value}' is invalid: entry ")


def test_redis_url_and_sentinels_together_are_refused_without_showing_the_url():
    with pytest.raises(ConfigurationError) as caught:
        Settings.load({"REDIS_URL": "redis://:s3cret@redis:6379/0", "REDIS_SENTINELS": "10.0.0.5:26379"})
    assert "REDIS_URL and REDIS_SENTINELS are both set" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_passwords_reach_child_processes_but_are_never_shown(bare_environment, monkeypatch):
    settings = Settings.load({"REDIS_SENTINELS": "10.0.0.5:26379", "REDIS_PASSWORD": "master-s3cret",
                              "REDIS_SENTINEL_PASSWORD": "sentinel-s3cret"})
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert "s3cret" not in shown
    environ = settings.to_environ()
    assert (environ["REDIS_PASSWORD"], environ["REDIS_SENTINEL_PASSWORD"]) == ("master-s3cret", "sentinel-s3cret")
    child = Settings.from_json(settings.to_json())
    assert child == settings and child.redis_password.get_secret_value() == "master-s3cret"
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert Settings.load() == settings


def test_the_wait_for_replicas_needs_a_timeout():
    with pytest.raises(ConfigurationError, match="REDIS_WAIT_TIMEOUT='0' is invalid: must be greater than 0"):
        Settings.load({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT": "0"})


def test_proxies_are_named_without_their_credentials(bare_environment):
    settings = Settings.load({"YTDLP_PROXIES": "http://ann:s3cret@proxy.example:3128, socks5h://[::1]:1080,"
                                               "https://p.example"})
    assert [proxy.label for proxy in settings.proxies] == [
        "http://proxy.example:3128", "socks5h://[::1]:1080", "https://p.example:443"]
    assert (settings.proxies[0].url, settings.proxies[0].password) == ("http://ann:s3cret@proxy.example:3128", "s3cret")
    for shown in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.proxies),
                  str(settings.proxies[0])):
        assert "s3cret" not in shown
    assert Settings.from_json(settings.to_json()).proxies == settings.proxies  # a child process gets them whole


@pytest.mark.parametrize("value, words", [
    ("ftp://ann:s3cret@proxy.example:21", "proxy 1 has the scheme 'ftp'; use one of http, https, socks4"),
    ("http://proxy.example:3128,http://ann:s3cret@:3128", "proxy 2 has no host"),
    ("http://ann:s3cret@proxy.example:31x8", "proxy 1 is not a URL such as http://proxy.example:3128"),
    ("http://ann:s3cret@proxy.example:3128/path", "proxy 1 (http://proxy.example:3128) has a path or query"),
])
def test_an_invalid_proxy_is_refused_without_showing_its_password(bare_environment, value, words):
    with pytest.raises(ConfigurationError) as caught:
        Settings.load({"YTDLP_PROXIES": value})
    assert caught.value.message.startswith("Setting YTDLP_PROXIES is invalid: ")
    assert words in caught.value.message and "s3cret" not in caught.value.message
