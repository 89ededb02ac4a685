"""The engine host with settings of its own: voice activity detection, the model cache."""

from pathlib import Path

from app.core.settings import Settings
from tests.helpers import FIXTURE_TEXT, word_error_rate
from workers.engine_host import EngineHost

MEDIA = Path(__file__).parent / "fixtures" / "media"


def test_vad_filter_skips_silence_and_keeps_speech(monkeypatch):
    monkeypatch.setenv("WHISPER_VAD_FILTER", "true")
    host = EngineHost(Settings.load())
    host.start()
    try:
        silence = host.client.transcribe(str(MEDIA / "silence.webm"), language=None, model="tiny.en")
        speech = host.client.transcribe(str(MEDIA / "lecture.webm"), language=None, model="tiny.en")
    finally:
        host.stop()
    assert silence.segments == [] and silence.duration > 3.9
    assert word_error_rate(FIXTURE_TEXT["lecture.webm"], speech.text) < 0.15


def test_a_model_that_cannot_be_loaded_fails_the_job_not_the_host(engine_host):
    import pytest

    from app.core.errors import ModelUnavailable

    with pytest.raises(ModelUnavailable):
        engine_host.client.transcribe(str(MEDIA / "fox.m4a"), language=None, model="/nonexistent/model-dir")
    assert engine_host.client.ping()
