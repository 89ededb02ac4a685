import re
from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.settings import SETTINGS, Settings

README = Path(__file__).parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    table_rows = re.findall(r"^\| `([A-Z_]+)` \|", README.read_text(), flags=re.M)
    assert sorted(table_rows) == sorted(setting.name for setting in SETTINGS)


def test_defaults():
    settings = Settings.load(environ={})
    assert settings.redis_url is None
    assert settings.effective_redis_url.startswith("unix://") and settings.effective_redis_url.endswith("redis.sock")
    assert settings.result_ttl == 86400
    assert settings.whisper_model == "tiny.en"
    assert settings.whisper_allowed_models == {"tiny.en": "tiny.en"}
    assert settings.allowed_url_hosts == ()
    assert settings.whisper_compute_type == "int8"


def test_overrides_win_over_the_environment():
    settings = Settings.load({"RESULT_TTL": 60}, environ={"RESULT_TTL": "120", "MAX_VIDEO_DURATION": "30"})
    assert (settings.result_ttl, settings.max_video_duration) == (60, 30)


@pytest.mark.parametrize("name, value, words", [
    ("MAX_VIDEO_DURATION", "abc", "MAX_VIDEO_DURATION='abc' is invalid: must be a whole number"),
    ("RESULT_TTL", "-5", "RESULT_TTL='-5' is invalid: must be a positive whole number"),
    ("WHISPER_DEVICE", "tpu", "WHISPER_DEVICE='tpu' is invalid: must be one of cpu, cuda, auto"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL='loud' is invalid"),
])
def test_invalid_values_fail_with_a_sentence_naming_the_setting(name, value, words):
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(environ={name: value})
    assert words in caught.value.message


def test_unknown_override_is_refused():
    with pytest.raises(ConfigurationError, match="Unknown setting 'REDIS'"):
        Settings.load({"REDIS": "x"}, environ={})


def test_allowed_models_accept_names_and_paths():
    settings = Settings.load(environ={"WHISPER_MODEL": "/models/large-v3-ct2",
                                      "WHISPER_ALLOWED_MODELS": "tiny.en, small=/models/small-ct2"})
    assert settings.default_model_name == "large-v3-ct2"
    assert settings.whisper_allowed_models == {
        "large-v3-ct2": "/models/large-v3-ct2", "tiny.en": "tiny.en", "small": "/models/small-ct2",
    }


def test_allowed_url_hosts_are_lowercased():
    assert Settings.load(environ={"ALLOWED_URL_HOSTS": "Media.Example.com, 127.0.0.1"}).allowed_url_hosts == (
        "media.example.com", "127.0.0.1")
