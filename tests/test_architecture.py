"""The shape of the house: which package may import which.

- ``app.core`` (settings, errors, jobs, quotas, transcripts, ...) is shared by everyone and imports
  neither the web layer nor the ML stack;
- ``workers`` and ``scheduler`` use ``app.core`` and never load Flask;
- the API (``app``) never loads the ML stack: it enqueues jobs by import path.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
WEB = ("flask", "werkzeug", "rq_dashboard", "prometheus_flask_exporter", "gunicorn")
ML = ("faster_whisper", "ctranslate2", "torch", "whisper", "av", "numpy", "onnxruntime", "yt_dlp")


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", modules("app/core"), ids=lambda path: path.name)
def test_the_core_imports_neither_the_web_layer_nor_the_ml_stack(path):
    wrong = {name for name in imports_of(path)
             if top(name) in WEB + ML + ("workers", "scheduler")
             or (top(name) == "app" and name != "app" and not name.startswith("app.core"))}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("path", modules("workers") + modules("scheduler"), ids=lambda path: str(path.relative_to(ROOT)))
def test_workers_and_scheduler_use_only_the_core_of_app(path):
    wrong = {name for name in imports_of(path)
             if top(name) in WEB or (top(name) == "app" and name != "app" and not name.startswith("app.core"))}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def loaded_after(code: str, env: dict | None = None) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after running ``code``."""
    script = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return set(result.stdout.split())


def test_a_worker_loads_no_flask(config):
    """Everything a worker process imports, and a job run in it, without Flask."""
    loaded = loaded_after(
        "import workers.worker, workers.jobs, workers.callbacks, workers.engine_host, scheduler.jobs\n"
        "import scheduler.registration\n"
        "from app.cli import cli\n"
        "from workers.worker import build_worker\n"
        "from app.core.settings import Settings\n"
        "from app.core.services import connect\n"
        "settings = Settings.load()\n"
        "build_worker(connect(settings), settings)\n"
    )
    assert "yt_dlp" in loaded and "rq" in loaded  # the check would notice a module
    assert not loaded & set(WEB), sorted(loaded & set(WEB))


def test_the_api_loads_no_ml_stack(config):
    """The API serves every kind of request, submits included, without the worker side."""
    loaded = loaded_after(
        "from app import create_app\n"
        "import app.cli, app.stack\n"
        "client = create_app({'METRICS_PUBLIC': 'true'}).test_client()\n"
        "assert client.get('/readyz').status_code == 200\n"
        "key = client.application.extensions['ytcaption'].users.create('arch@example.com', 'pro')[1]\n"
        "headers = {'Authorization': 'Bearer ' + key}\n"
        "answer = client.post('/api/v1/transcribe/async/submit', headers=headers,\n"
        "                     json={'youtube_url': 'https://youtu.be/dQw4w9WgXcQ'})\n"
        "assert answer.status_code == 202, answer.get_json()\n"
        "job = answer.get_json()['job_id']\n"
        "assert client.get('/api/v1/transcribe/async/status/' + job, headers=headers).status_code == 200\n"
        "assert client.delete('/api/v1/transcribe/async/cancel/' + job, headers=headers).status_code == 200\n"
        "assert client.get('/openapi.json').status_code == 200 and client.get('/metrics').status_code == 200\n"
    )
    assert "flask" in loaded
    assert not loaded & set(ML + ("workers",)), sorted(loaded & set(ML + ("workers",)))
