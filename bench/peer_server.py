"""The peer of section 9: whisper-asr-webservice, started from a checkout the user installed.

The benchmark never installs the peer: it is not on PyPI, and no copy of its code or of a recipe
that builds it belongs in this repository. ``--peer PATH`` names what the user set up (see
docs/performance.md): a checkout with its virtual environment in ``.venv`` or ``venv``, or the
``whisper-asr-webservice`` command itself. It runs as its README says, one uvicorn process from
that command, with its faster-whisper engine on ytcaption's own model and compute type.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.core.redis_server import free_port
from app.core.settings import Settings
from bench.engine import Clip
from bench.harness import BenchError, Harness

COMMAND = "whisper-asr-webservice"
#: The peer imports torch, openai-whisper and whisperx before it loads the model: slow on 2 busy cores.
START_TIMEOUT = 300
REQUEST_TIMEOUT = 900


@dataclass(frozen=True)
class Result:
    """One transcription as a client saw it."""

    seconds: float  # from sending the request to having the transcript's status or body
    ended: float  # time.perf_counter() when it ended
    text: str
    job_seconds: float | None = None  # ytcaption only: the job's own ended_at - created_at
    stages: dict[str, float] | None = None  # ytcaption only: the job's timings (queued, download, transcribe...)


def peer_command(path: Path) -> list[str]:
    """The peer's start command from ``--peer PATH``: a checkout with a venv, or the command."""
    if path.is_dir():
        for venv in (".venv", "venv"):
            script = path / venv / "bin" / COMMAND
            if script.exists():
                return [str(script)]
        raise BenchError(f"{path} has neither .venv/bin/{COMMAND} nor venv/bin/{COMMAND}: install the peer in a "
                         "virtual environment there first (docs/performance.md, section 9)")
    if path.is_file() and os.access(path, os.X_OK):
        return [str(path)]
    raise BenchError(f"--peer {path}: neither a checkout of whisper-asr-webservice nor its {COMMAND} command")


def get(url: str, timeout: float = 120) -> None:
    """GET ``url`` and read the whole answer (any status): a server that answers at all."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError:
        pass


class Peer:
    """whisper-asr-webservice as its clients see it: ``POST /asr`` with the file, the text in the answer."""

    label = "peer"
    probe_path = "/docs"  # it has no health route: /docs is the Swagger page FastAPI serves

    def __init__(self, h: Harness, path: Path, settings: Settings) -> None:
        from workers.engines import resolve_model

        self.vad_filter = settings.whisper_vad_filter
        self.path = path
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        #: What the peer is told (its settings are environment variables), for the report's notes too. A
        #: model path is loaded as it is, never downloaded; ASR_MODEL_PATH is only its download directory.
        self.environment = {"ASR_ENGINE": "faster_whisper",
                            "ASR_MODEL": resolve_model(settings.default_model_name, settings),
                            "ASR_QUANTIZATION": settings.whisper_compute_type, "ASR_DEVICE": "cpu",
                            "ASR_MODEL_PATH": str(h.dir / "peer-models"), "HF_HUB_OFFLINE": "1"}
        # Its package is called ``app`` too: ytcaption's PYTHONPATH would shadow it.
        env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
        h.spawn("peer", [*peer_command(path), "--host", "127.0.0.1", "--port", str(port)], env | self.environment)
        h.wait_until(lambda: self._answers(), "the peer to answer /docs", timeout=START_TIMEOUT, watch=["peer"],
                     interval=0.5)

    def _answers(self) -> bool:
        try:
            get(self.url + self.probe_path, timeout=2)
        except OSError:
            return False
        return True

    def describe(self) -> str:
        """Its version (from its OpenAPI document) and the commit of its checkout, if it is one."""
        with urllib.request.urlopen(self.url + "/openapi.json", timeout=30) as response:
            version = json.load(response)["info"]["version"]
        checkout = self.path if self.path.is_dir() else self.path.resolve().parent
        commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        return f"whisper-asr-webservice {version}" + (f", commit {commit}" if commit else "")

    def transcribe(self, clip: Clip) -> Result:
        """``POST /asr?output=json`` with the clip as a multipart upload, as its Swagger page sends it."""
        boundary = uuid.uuid4().hex
        body = b"".join([
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="audio_file"; filename="{clip.name}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            clip.path.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        query = "output=json&task=transcribe" + ("&vad_filter=true" if self.vad_filter else "")
        request = urllib.request.Request(f"{self.url}/asr?{query}", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            raise BenchError(f"the peer answered {exc.code} for {clip.name}: {exc.read()[:300]!r}") from exc
        ended = time.perf_counter()
        return Result(ended - started, ended, answer["text"])
