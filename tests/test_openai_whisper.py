"""openai-whisper, the optional second engine (WHISPER_ENGINE=openai-whisper).

No public package ships openai-whisper's weights for offline use, so these tests build a tiny
checkpoint with RANDOM weights from openai-whisper's own model classes. Its "transcripts" are
gibberish: the tests check only that the engine loads it and returns well-formed results
(timings, duration, callbacks, cache, errors). Accuracy is tested on faster-whisper, whose
real tiny.en model is bundled.

CI installs the extra (`make install` does `pip install -e '.[test,openai-whisper]'`), and these
tests fail there without it; elsewhere they are skipped if it is not installed.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import av
import numpy as np
import pytest

from app.core.errors import (
    ConfigurationError,
    ModelUnavailable,
    NoAudio,
    UndecodableMedia,
    VideoTooLong,
)
from app.core.redis_server import free_port
from app.core.settings import Settings
from tests.helpers import GARBAGE
from workers.engine_host import EngineHost
from workers.engines import (
    FasterWhisperEngine,
    OpenAIWhisperEngine,
    Transcript,
    create_engine,
)

try:
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the extra: never skip these tests there
    pytest.skip("openai-whisper is not installed: pip install -e '.[test,openai-whisper]'", allow_module_level=True)

MEDIA = Path(__file__).parent / "fixtures" / "media"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A RANDOMLY initialised English-only Whisper checkpoint, saved as openai-whisper saves its models.

    One layer of width 64, so it loads and decodes in milliseconds. With n_text_ctx=4 the decoder
    emits at most 2 tokens per 30-second window (a timestamp, then a word). So openai-whisper
    decodes each window once and moves a whole window on. Given a longer context, random weights
    write timestamps that move it on by 20 ms at a time and start temperature fallback (sampling).
    That took 0.4 to 8 s on a 3 s clip and was never the same twice.
    """
    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=1, n_audio_layer=1,
        n_vocab=51864,  # the English-only tokenizer's vocabulary: an `.en` model
        n_text_ctx=4, n_text_state=64, n_text_head=1, n_text_layer=1,
    )
    model = Whisper(dims)
    # openai-whisper creates this one with torch.empty (its checkpoints always overwrite it):
    # left so, it is whatever was in memory, NaN included.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    path = tmp_path_factory.mktemp("openai-whisper") / "random-tiny.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture
def make_engine(checkpoint, tmp_path, monkeypatch):
    """An openai-whisper engine whose default model is the random checkpoint."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where model names are downloaded to

    def make(**overrides: str) -> OpenAIWhisperEngine:
        environ = {"WHISPER_ENGINE": "openai-whisper", "WHISPER_MODEL": str(checkpoint), **overrides}
        engine = create_engine(Settings.load(environ))
        assert isinstance(engine, OpenAIWhisperEngine)
        return engine

    return make


def probed_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def assert_well_formed(transcript: Transcript, duration: float) -> None:
    assert transcript.duration == pytest.approx(duration, abs=0.05)
    for segment in transcript.segments:
        assert 0 <= segment.start <= segment.end <= transcript.duration
        assert isinstance(segment.text, str) and segment.text == segment.text.strip()


def test_loads_a_checkpoint_by_path_and_returns_well_formed_segments(make_engine, checkpoint):
    engine = make_engine()
    durations, progress, segments = [], [], []
    transcript = engine.transcribe(
        str(MEDIA / "fox.m4a"), language=None, model=checkpoint.name,
        on_duration=durations.append, on_progress=progress.append,
        on_segment=lambda segment, fraction: segments.append((segment, fraction)),
    )
    assert (transcript.model, transcript.language) == (checkpoint.name, "en")  # an `.en` model
    assert_well_formed(transcript, probed_duration(MEDIA / "fox.m4a"))
    assert durations == [transcript.duration]
    assert progress and progress == sorted(progress) and 0 < progress[0] and progress[-1] == 1.0
    assert [segment for segment, _ in segments] == transcript.segments
    assert all(0 <= fraction <= 1 for _, fraction in segments)
    assert transcript.model_load_seconds > 0

    again = engine.transcribe(str(MEDIA / "lecture.webm"), language="en", model=checkpoint.name)
    assert again.model_load_seconds == 0.0  # the model stayed loaded
    assert_well_formed(again, probed_duration(MEDIA / "lecture.webm"))


def test_the_model_cache_keeps_the_most_recently_used_models(make_engine, checkpoint, tmp_path):
    shutil.copy(checkpoint, tmp_path / "other.pt")
    engine = make_engine(WHISPER_MODEL_CACHE="1", WHISPER_ALLOWED_MODELS=f"other={tmp_path / 'other.pt'}")
    first, other = checkpoint.name, "other"
    assert engine.load(first)[1] > 0
    assert engine.load(first)[1] == 0.0
    assert engine.load(other)[1] > 0  # evicts the first: the cache holds one model
    assert engine.load(first)[1] > 0


def write_video_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize("name, write, error", [
    ("garbage.webm", lambda path: path.write_bytes(GARBAGE), UndecodableMedia),
    ("empty.m4a", lambda path: path.write_bytes(b""), UndecodableMedia),
    ("video-only.mp4", write_video_only, NoAudio),
])
def test_bad_media_is_refused_with_a_job_error(make_engine, checkpoint, tmp_path, name, write, error):
    write(tmp_path / name)
    with pytest.raises(error):
        make_engine().transcribe(str(tmp_path / name), language=None, model=checkpoint.name)


def test_audio_over_the_limit_is_refused_before_decoding(make_engine, checkpoint):
    durations = []
    with pytest.raises(VideoTooLong, match="limit is 2 s"):
        make_engine().transcribe(str(MEDIA / "fox.m4a"), language=None, model=checkpoint.name,
                                 max_duration=2, on_duration=durations.append)
    assert durations == []


def test_a_model_name_that_cannot_be_downloaded_is_model_unavailable(make_engine, tmp_path, monkeypatch, caplog):
    # The one fake: openai-whisper's download host, moved to a closed loopback port, so the test
    # gives the same answer with or without network.
    url = urlsplit(whisper._MODELS["base.en"])._replace(scheme="http", netloc=f"127.0.0.1:{free_port()}")
    monkeypatch.setitem(whisper._MODELS, "base.en", url.geturl())
    engine = make_engine(WHISPER_ALLOWED_MODELS="base.en")
    with pytest.raises(ModelUnavailable) as caught:
        engine.transcribe(str(MEDIA / "fox.m4a"), language=None, model="base.en")
    # The client is told which model; the operator's log says where it was looked for, and why not.
    assert caught.value.message == "Model 'base.en' could not be loaded on this worker."
    assert str(tmp_path / "cache" / "whisper") in caplog.text and "Connection refused" in caplog.text


@pytest.mark.parametrize("target, words", [
    ("large-v9", "neither an openai-whisper model name"),
    ("/nonexistent/model.pt", "the checkpoint /nonexistent/model.pt"),
])
def test_a_model_that_cannot_be_loaded_is_model_unavailable(make_engine, target, words, caplog):
    engine = make_engine(WHISPER_ALLOWED_MODELS=f"other={target}")
    with pytest.raises(ModelUnavailable) as caught:
        engine.load("other")
    assert words in caught.value.message + caplog.text


def test_without_the_package_the_error_says_how_to_install_it(make_engine, checkpoint, monkeypatch):
    engine = make_engine()
    monkeypatch.setitem(sys.modules, "whisper", None)  # `import whisper` now raises ImportError
    with pytest.raises(ModelUnavailable, match=r"pip install '\.\[openai-whisper\]'"):
        engine.load(checkpoint.name)


@pytest.mark.parametrize("value, engine_class", [
    (None, FasterWhisperEngine),
    ("faster-whisper", FasterWhisperEngine),
    ("openai-whisper", OpenAIWhisperEngine),
])
def test_create_engine_picks_the_engine_the_setting_names(value, engine_class):
    environ = {} if value is None else {"WHISPER_ENGINE": value}
    assert type(create_engine(Settings.load(environ))) is engine_class


@pytest.mark.parametrize("environ, words", [
    ({"WHISPER_ENGINE": "whisper.cpp"},
     "WHISPER_ENGINE='whisper.cpp' is invalid: must be one of faster-whisper, openai-whisper"),
    ({"WHISPER_ENGINE": "openai-whisper", "WHISPER_MODEL": "/models/small-ct2"},
     "WHISPER_MODEL names '/models/small-ct2', which openai-whisper cannot load"),
    ({"WHISPER_ENGINE": "openai-whisper", "WHISPER_ALLOWED_MODELS": "small=/models/small-ct2"},
     "WHISPER_ALLOWED_MODELS names '/models/small-ct2', which openai-whisper cannot load"),
    ({"WHISPER_MODEL": "/models/small.pt"},
     "WHISPER_MODEL names '/models/small.pt', an openai-whisper checkpoint that faster-whisper cannot load"),
])
def test_settings_an_engine_cannot_use_fail_at_start_up(environ, words):
    with pytest.raises(ConfigurationError) as caught:
        Settings.load(environ)
    assert words in caught.value.message


def test_the_engine_host_serves_openai_whisper(checkpoint, tmp_path, monkeypatch):
    for key, value in {"WHISPER_ENGINE": "openai-whisper", "WHISPER_MODEL": str(checkpoint),
                       "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    host = EngineHost(Settings.load())
    host.start()
    try:
        progress = []
        transcript = host.client.transcribe(str(MEDIA / "fox.m4a"), language=None, model=checkpoint.name,
                                            on_progress=progress.append)
        with pytest.raises(UndecodableMedia):
            host.client.transcribe(__file__, language=None, model=checkpoint.name)
        assert host.client.ping()
    finally:
        host.stop()
    assert transcript.model_load_seconds == 0.0  # the host loaded its default model at start
    assert_well_formed(transcript, probed_duration(MEDIA / "fox.m4a"))
    assert len(progress) == len(transcript.segments)
