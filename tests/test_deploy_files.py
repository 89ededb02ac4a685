"""Every command in the Procfile and docker-compose.yml points to an entry point that exists."""

import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from click.testing import CliRunner

from app.cli import cli
from app.core.jobs import QUEUE_NAMES

ROOT = Path(__file__).parents[1]


def procfile_commands() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip())


def compose_services() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def compose_commands() -> dict[str, list[str]]:
    """The commands of the services built from our Dockerfile (the others run their image's own)."""
    return {name: service["command"] for name, service in compose_services().items() if "build" in service}


def check_command(argv: list[str]) -> None:
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].removeprefix("exec "))
    program, *args = argv
    if program == "gunicorn":
        assert args[:2] == ["--config", "python:app.gunicorn_conf"]
        import importlib.util

        assert importlib.util.find_spec("app.gunicorn_conf")  # not imported: it sets the environment

        module, _, call = args[-1].partition(":")
        assert (module, call) == ("app", "create_app()")
        from app import create_app

        assert callable(create_app)
    elif program == "ytcaption":
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts["ytcaption"] == "app.cli:main"
        assert args[0] in cli.commands
        assert set(args[1:]) <= set(QUEUE_NAMES)
        assert CliRunner().invoke(cli, [args[0], "--help"]).exit_code == 0
    else:
        pytest.fail(f"unknown program {program!r}")


@pytest.mark.parametrize("name, command", sorted(procfile_commands().items()))
def test_procfile_commands_exist(name, command):
    check_command(shlex.split(command.strip()))


def test_procfile_has_the_documented_processes():
    assert set(procfile_commands()) == {"web", "worker_express", "worker", "scheduler"}
    assert procfile_commands()["worker"].split()[2:] == list(QUEUE_NAMES)


@pytest.mark.parametrize("name, command", sorted(compose_commands().items()))
def test_compose_commands_exist(name, command):
    check_command(command)


def test_compose_redis_is_durable_and_never_evicts():
    redis = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    options = dict(zip(redis[1::2], redis[2::2]))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"  # an accepted job is on disk before the 202
    assert options["--maxmemory-policy"] == "noeviction"


def test_honcho_accepts_the_procfile():
    import subprocess
    import sys
    from pathlib import Path

    honcho = Path(sys.executable).parent / "honcho"
    result = subprocess.run([str(honcho), "check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Valid procfile detected (web, worker_express, worker, scheduler)" in result.stderr + result.stdout


def test_every_compose_service_has_a_healthcheck_that_exists():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(services) == {"redis", "api", "worker-express", "worker-standard", "scheduler", "bgutil"}
    assert set(compose_commands()) == {"api", "worker-express", "worker-standard", "scheduler"}
    assert services["worker-standard"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if test[1] == "ytcaption":
            assert test[2] in cli.commands and CliRunner().invoke(cli, [test[2], "--help"]).exit_code == 0


def test_the_po_token_server_is_off_by_default_private_and_of_the_plugins_version():
    """bgutil's server runs only with `--profile youtube-pot`, is never published (it is unauthenticated),
    and is the version of the plugin the youtube-pot extra installs (the two must match)."""
    bgutil = compose_services()["bgutil"]
    assert bgutil["profiles"] == ["youtube-pot"]
    assert "ports" not in bgutil and bgutil["expose"] == ["4416"]
    image, _, tag = bgutil["image"].partition(":")
    assert image == "brainicism/bgutil-ytdlp-pot-provider"
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["youtube-pot"]
    assert extra == [f"bgutil-ytdlp-pot-provider=={tag}"]
    assert not set(compose_services()["bgutil"].get("depends_on", {}))


def test_the_image_installs_the_extras_compose_asks_for():
    app = compose_services()["api"]
    assert app["build"] == {"context": ".", "args": {"EXTRAS": "${YTCAPTION_EXTRAS:-}"}}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile and 'pip install ".${EXTRAS:+[$EXTRAS]}"' in dockerfile
    for extras, expected in (("", "."), ("youtube-pot", ".[youtube-pot]")):  # the line, as sh expands it
        line = subprocess.run(["sh", "-c", 'echo ".${EXTRAS:+[$EXTRAS]}"'], env={"EXTRAS": extras},
                              capture_output=True, text=True, check=True).stdout.strip()
        assert line == expected
