"""The docs stay true: generated tables current, every command and URL shown exists as written,
every setting named is a setting, and the README stays a front door."""

import re
import shlex
from pathlib import Path

import click
import pytest
from cogapp import Cog

from app import create_app
from app.cli import cli
from app.core.settings import Settings

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Environment variables the docs name that are not ytcaption's settings.
# YTCAPTION_EXTRAS: docker-compose.yml's build argument (the pip extras of the image), read by compose only.
OTHER_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR", "XDG_CACHE_HOME", "ADMIN_KEY", "KEY_ID", "MAX_JOBS", "YTCAPTION_EXTRAS",
                   # the client's (`ytcaption transcribe`, docs/client.md), not the server's
                   "YTCAPTION_SERVER", "YTCAPTION_API_KEY"}


def shell_lines(path: Path) -> list[str]:
    """The commands of the ```sh blocks of ``path``: continued lines and open quotes joined."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending} {line.strip()}" if pending else line.strip()
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            if pending:
                lines.append(pending)
            pending = ""
    return lines


def commands(program: str) -> list[tuple[str, list[str]]]:
    """Every use of ``program`` in the docs' shell blocks: (where, its arguments)."""
    found = []
    for path in DOCS:
        for line in shell_lines(path):
            for match in re.finditer(rf"(?:^|[\s($])(?:\.venv/bin/)?{program}\s+([^|#)\n]*)", line):
                found.append((f"{path.name}: {line}", shlex.split(match.group(1))))
    return found


def test_the_generated_tables_are_current():
    """`make docs` regenerates them; this fails if someone forgot."""
    status = Cog().main(["cog", "--check", "-I", str(ROOT / "docs"), "-I", str(ROOT), *map(str, DOCS)])
    assert status == 0, "a table in docs/ is stale: run `make docs`"


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 12 * 1024
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
    assert "## Quickstart" in readme and "make up " in readme and "make test " in readme


@pytest.mark.parametrize("where, args", commands("ytcaption"), ids=lambda value: str(value)[:60])
def test_every_ytcaption_command_shown_parses(where, args):
    command, path = cli, []
    while isinstance(command, click.Group):
        name = args.pop(0)
        command = command.get_command(click.Context(cli), name)
        assert command is not None, f"{where}: no command {' '.join([*path, name])}"
        path.append(name)
    command.make_context(" ".join(path), args)  # raises on an unknown option or a bad value


def test_every_url_shown_names_a_route():
    routes = create_app({"REDIS_URL": "redis://127.0.0.1:1/0"}).url_map.bind("localhost")
    checked = 0
    for path in DOCS:
        for line in shell_lines(path):
            if "curl " not in line:
                continue
            words = shlex.split(line[line.index("curl "):].split(" | ")[0], comments=True)
            method = words[words.index("-X") + 1] if "-X" in words else ("POST" if "-d" in words else "GET")
            url = next(word for word in words if word.startswith("localhost:"))
            route = re.sub(r"\$\w+", "x", url.split("/", 1)[1].split("?")[0])
            routes.match("/" + route, method=method)  # raises NotFound or MethodNotAllowed
            checked += 1
    assert checked >= 15


def test_every_setting_named_in_the_docs_exists():
    settings = {name.upper() for name in Settings.model_fields}
    for path in [*DOCS, ROOT / "docker-compose.yml", ROOT / "Procfile"]:
        for word, family in re.findall(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)(_\*)?", path.read_text()):
            if family:  # QUOTA_*: a family of settings
                assert any(setting.startswith(word + "_") for setting in settings), f"{path.name}: {word}_*"
            elif "_" in word and word not in OTHER_VARIABLES:
                assert word in settings, f"{path.name} names {word}, which is no setting"
