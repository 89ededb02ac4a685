"""The OpenAI-compatible API, with OpenAI's own Python SDK as the client, against gunicorn and a
`ytcaption worker` process on their own Redis: every response format parsed by the SDK, word
timestamps, translation and German with a multilingual model from PyPI, errors as the SDK's
exceptions, the body cap, and requests that wait without holding a worker process."""

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from redis import Redis

from app.core.redis_server import RedisServer, free_port
from app.core.services import Services
from app.core.settings import Settings
from tests.conftest import FIXTURES
from tests.helpers import (
    FIXTURE_TEXT,
    http,
    job_status,
    multilingual_model,
    start_api,
    start_worker,
    stop_process,
    wait_for,
    word_error_rate,
)

GERMAN = Path(__file__).parent / "fixtures" / "german.webm"
GERMAN_TEXT = "Guten Morgen. Wie geht es Ihnen heute?"
#: Long enough for any job here on a busy machine; the free tier's jobs wait that long for nothing.
SYNC_WAIT = 40


@dataclass
class Server:
    url: str
    pro: str  # API keys
    free: str
    redis: Redis
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, key: str | None = None, **options) -> openai.OpenAI:
        """An SDK client of this server (closed with the server: an unclosed connection is a ResourceWarning)."""
        self.clients.append(openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.pro, max_retries=0,
                                          **options))
        return self.clients[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn and a worker that serves only the express lane (pro users): a free user's job waits."""
    base = tmp_path_factory.mktemp("openai-api")
    redis_server = RedisServer(base / "redis", port=free_port(), persistent=False)
    redis_server.start()
    env = {**os.environ, "REDIS_URL": redis_server.url, "WORK_DIR": str(base / "work"), "DATA_DIR": str(base / "data"),
           "RATE_LIMIT_PRO": "100000", "RATE_LIMIT_FREE": "100000", "SYNC_WAIT_TIMEOUT": str(SYNC_WAIT),
           "WHISPER_ALLOWED_MODELS": f"base={multilingual_model(base)}", "MAX_UPLOAD_BYTES": "200000"}
    services = Services.from_settings(Settings.load({key: env[key] for key in ("REDIS_URL", "WHISPER_ALLOWED_MODELS")}))
    pro = services.users.create("sdk-pro@example.com", "pro")[1]
    free = services.users.create("sdk-free@example.com", "free")[1]
    connection = Redis.from_url(redis_server.url)
    port = free_port()
    api = start_api(port, env)
    worker = start_worker(connection, "express", env=env)
    server = Server(f"http://127.0.0.1:{port}", pro, free, connection)
    yield server
    for client in server.clients:
        client.close()
    stop_process(worker)
    stop_process(api)
    connection.close()
    services.redis.close()
    redis_server.stop()


def test_a_transcription_with_word_timestamps_through_the_sdk(server):
    client = server.client()
    before = json.loads(http("GET", server.url + "/api/v1/me", {"Authorization": f"Bearer {server.pro}"})[2])
    started = time.monotonic()
    with open(FIXTURES / "queue.webm", "rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    print(f"SDK call, 8 s of speech, verbose_json with words: {time.monotonic() - started:.2f} s")
    result = raw.parse()
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert word_error_rate(FIXTURE_TEXT["queue.webm"], result.text) < 0.2, result.text
    assert result.language == "english" and 7 < result.duration < 9
    assert result.segments and result.words
    previous = 0.0
    for word in result.words:
        assert word.start >= previous - 0.01 and word.end >= word.start, "words in time order"
        assert any(s.start <= word.start and word.end <= s.end for s in result.segments), f"{word} not in a segment"
        previous = word.end
    assert result.usage.seconds == 9

    # An ordinary job: the status endpoint knows it, and the request was charged to the user's quota.
    headers = {"Authorization": f"Bearer {server.pro}"}
    job = job_status(server.url, headers, raw.headers["X-Job-Id"])
    assert job["status"] == "completed" and job["filename"] == "queue.webm" and job["queue"] == "express"
    after = json.loads(http("GET", server.url + "/api/v1/me", headers)[2])
    assert after["quota"]["used"] == before["quota"]["used"] + 1


def test_the_same_audio_again_is_answered_from_the_cache_as_a_job_of_its_own(server):
    """The SDK's client sees the same answer; the second request is a job completed at submit (app.core.sharing)."""
    client = server.client()
    audio = (FIXTURES / "fox.m4a").read_bytes()
    asked = {"model": "whisper-1", "file": ("fox.m4a", audio), "prompt": "The result cache."}
    first = client.audio.transcriptions.with_raw_response.create(**asked)
    started = time.monotonic()
    again = client.audio.transcriptions.with_raw_response.create(**asked)
    print(f"the same audio again, from the cache: {time.monotonic() - started:.3f} s")
    assert first.parse().text == again.parse().text
    headers = {"Authorization": f"Bearer {server.pro}"}
    jobs = [job_status(server.url, headers, raw.headers["X-Job-Id"]) for raw in (first, again)]
    assert jobs[0]["job_id"] != jobs[1]["job_id"]
    assert "cached" not in jobs[0] and jobs[1]["cached"] is True
    assert jobs[1]["result"]["transcription_id"] == jobs[1]["job_id"]


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "verbose_json", "vtt"])
def test_every_response_format_is_parsed_by_the_sdk(server, response_format):
    with open(FIXTURES / "fox.m4a", "rb") as audio:
        result = server.client().audio.transcriptions.create(model="whisper-1", file=audio,
                                                             response_format=response_format, language="en")
    if response_format in ("json", "verbose_json"):
        text = result.text
    else:
        assert isinstance(result, str)
        text = result
    if response_format == "srt":
        assert result.startswith("1\n00:00:00,") and " --> " in result
    if response_format == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:")
    if response_format == "verbose_json":
        assert result.task == "transcribe" and result.segments[0].start == 0.0
    assert "fox" in text.lower() and "dog" in text.lower(), text


def test_german_and_its_translation_with_a_multilingual_model(server):
    client = server.client()
    with open(GERMAN, "rb") as audio:
        heard = client.audio.transcriptions.create(model="base", file=audio, response_format="verbose_json")
    assert heard.language == "german" and word_error_rate(GERMAN_TEXT, heard.text) < 0.2, heard.text
    # The SDK marks translations.create deprecated (OpenAI's newer models translate with a prompt); clients call it.
    with open(GERMAN, "rb") as audio, pytest.deprecated_call():
        translated = client.audio.translations.create(model="base", file=audio, response_format="verbose_json")
    assert translated.task == "translate" and translated.language == "english"
    assert "good morning" in translated.text.lower(), translated.text


def test_errors_are_the_sdks_own_exceptions_in_openais_shape(server):
    with open(FIXTURES / "fox.m4a", "rb") as audio, pytest.deprecated_call():
        with pytest.raises(openai.BadRequestError) as refused:
            server.client().audio.translations.create(model="whisper-1", file=audio)
    error = refused.value.body
    assert error["code"] == "model_cannot_translate" and error["type"] == "invalid_request_error"
    assert "tiny.en" in error["message"] and "choose one of: base" in error["message"]

    with pytest.raises(openai.BadRequestError) as refused:
        server.client().audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", b"RIFF"))
    assert refused.value.body["code"] == "unknown_model" and "whisper-1" not in refused.value.body["message"]

    with pytest.raises(openai.BadRequestError) as refused:
        server.client().audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"),
                                                    response_format="mp3")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "response_format"

    with pytest.raises(openai.AuthenticationError):
        server.client("not-a-key").models.list()

    with pytest.raises(openai.BadRequestError) as refused:  # a job that fails: not audio
        server.client().audio.transcriptions.create(model="whisper-1", file=("notes.mp3", b"not audio" * 1000))
    assert refused.value.body["code"] == "undecodable_media"
    assert refused.value.response.headers["X-Job-Id"]

    with pytest.raises(openai.APIStatusError) as refused:
        server.client().audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * 200_001))
    assert refused.value.status_code == 413 and refused.value.body["code"] == "upload_too_large"


def test_models_lists_whisper_1_and_the_served_models(server):
    models = server.client().models.list()
    assert [model.id for model in models] == ["whisper-1", "base", "tiny.en"]
    assert server.client().models.retrieve("tiny.en").owned_by == "ytcaption"
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("whisper-2")


def test_a_body_announced_over_the_cap_is_refused_before_it_is_sent(server):
    """413 from the Content-Length alone: the answer comes while the client still holds nearly all the body."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.pro}\r\n"
                      f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * 10**6}\r\n\r\n"
                      "--b\r\n").encode())
        answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"upload_too_large"' in answer and '"type":"invalid_request_error"' in answer.replace(" ", "")


def read_answer(sock: socket.socket) -> str:
    """One HTTP answer, whole: its head, then as much body as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = int(lengths[0]) if lengths else 0
    while len(body) < length and (more := sock.recv(65536)):
        body += more
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def test_waiting_requests_hold_no_worker_process_and_answer_202_after_the_wait(server):
    """Free users' jobs wait in a lane no worker serves: more waiting requests than gunicorn has processes
    (2), and the API still answers others at once; after SYNC_WAIT_TIMEOUT each gets its job's id."""
    client = server.client(server.free, timeout=SYNC_WAIT + 60)
    answers: dict[int, object] = {}

    def wait(index: int) -> None:
        answers[index] = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("fox.m4a", (FIXTURES / "fox.m4a").read_bytes()), response_format="text",
            prompt=f"Request {index}.")  # four requests, not one shared by four (app.core.sharing)

    waiting = [threading.Thread(target=wait, args=(index,)) for index in range(4)]
    for thread in waiting:
        thread.start()
    wait_for(lambda: server.redis.llen("rq:queue:standard") == 4, timeout=60, message="the four jobs to be queued")
    started = time.monotonic()
    assert [model.id for model in server.client().models.list()][0] == "whisper-1"
    print(f"/v1/models answered in {time.monotonic() - started:.3f} s beside 4 waiting requests")
    assert all(thread.is_alive() for thread in waiting), "the waiting requests were still waiting"
    for thread in waiting:
        thread.join(SYNC_WAIT + 90)
    headers = {"Authorization": f"Bearer {server.free}"}
    for raw in answers.values():
        assert raw.status_code == 202
        accepted = json.loads(raw.text)
        assert accepted["status_url"] == f"/api/v1/transcribe/async/status/{accepted['job_id']}"
        assert raw.headers["X-Job-Id"] == accepted["job_id"]
        # Still an ordinary job: it can be cancelled, and its upload goes with it.
        code, _, _ = http("DELETE", f"{server.url}/api/v1/transcribe/async/cancel/{accepted['job_id']}", headers)
        assert code == 200
    assert len(answers) == 4
    assert list(server.redis.scan_iter("ytcaption:upload:*")) == []
