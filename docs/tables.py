"""The tables of docs/, generated from the code with cog (``make docs``; ``tests/test_docs.py`` fails
when one is stale). Each function returns a Markdown table."""

from __future__ import annotations

import inspect
import json
from pathlib import Path


def settings_table() -> str:
    from app.core.settings import Settings

    rows = ["| Setting | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra or {}
        if "shown_default" in extra:
            default = f"`{extra['shown_default']}`"
        elif field.default is None or field.default == ():
            default = "(unset)"
        elif isinstance(field.default, bool):
            default = f"`{str(field.default).lower()}`"
        else:
            default = f"`{field.default}`"
        rows.append(f"| `{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


def errors_table(kind: str) -> str:
    """``kind`` "http": the errors the API answers with; "job": the ``error.type`` of a failed job."""
    from app.core import errors

    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.YtcaptionError) and cls.__module__ == errors.__name__]
    if kind == "job":
        chosen = [cls for cls in classes if issubclass(cls, errors.JobError) and cls is not errors.JobError]
        rows = ["| `error.type` | retried | when |", "|---|---|---|"]
        for cls in sorted(chosen, key=lambda cls: cls.code):
            rows.append(f"| `{cls.code}` | {'yes' if cls.transient else 'no'} | {_doc(cls)} |")
    else:
        from app.api import MAX_BODY_BYTES

        chosen = [(cls.status, cls.code, _doc(cls)) for cls in classes if not issubclass(cls, errors.JobError)
                  and cls not in (errors.YtcaptionError, errors.BadRequest, errors.ConfigurationError,
                                  errors.UserAlreadyExists)]
        # Werkzeug's own, rendered like ours (app/error_handlers.py).
        chosen += [(404, "not_found", "No such route."),
                   (405, "method_not_allowed", "The route does not take this method (`Allow` lists those it does)."),
                   (413, "request_entity_too_large", f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.")]
        rows = ["| status | `error` | when |", "|---|---|---|"]
        for status, code, when in sorted(chosen):
            rows.append(f"| {status} | `{code}` | {when} |")
    return "\n".join(rows) + "\n"


def metrics_table() -> str:
    from app.metrics import JOB_METRICS

    rows = ["| metric | type | meaning |", "|---|---|---|"]
    for metric in JOB_METRICS:
        suffix = "_total" if metric.kind == "counter" else ""
        labels = f"{{{','.join(metric.labels)}}}" if metric.labels else ""
        rows.append(f"| `{metric.name}{suffix}{labels}` | {metric.kind} | {metric.help} |")
    return "\n".join(rows) + "\n"


def endpoints_table() -> str:
    from app import create_app

    spec = create_app({"REDIS_URL": "redis://127.0.0.1:1/0"}).test_client().get("/openapi.json").get_json()
    rows = ["| method and path | what | key |", "|---|---|---|"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            key = "no" if operation.get("security") == [] else (
                "admin" if "403" in operation["responses"] else "yes")
            rows.append(f"| `{method.upper()} {path}` | {operation['summary']} | {key} |")
    return "\n".join(rows) + "\n"


def cli_table() -> str:
    import click

    from app.cli import cli

    rows = ["| command | what |", "|---|---|"]

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            return
        words = []
        for param in command.params:
            if isinstance(param, click.Argument):
                name = param.human_readable_name
                words.append(f"[{name} ...]" if param.nargs == -1 else name)
            elif param.name != "help":
                word = param.opts[0] if param.is_flag else f"{param.opts[0]} {param.name.upper()}"
                words.append(word if param.required else f"[{word}]")
        usage = " ".join(["ytcaption", *path, *words])
        rows.append(f"| `{usage}` | {(command.help or '').strip().splitlines()[0]} |")

    walk(cli, [])
    return "\n".join(rows) + "\n"


def performance_table(results: str = "bench/results/latest.json") -> str:
    from bench.report import Figure

    data = json.loads((Path(__file__).parents[1] / results).read_text())
    fields = {"section", "name", "values", "unit", "note", "digits"}
    figures = sorted((Figure(**{key: value for key, value in item.items() if key in fields},
                             target=tuple(item["target"]) if item["target"] else None)
                      for item in data["figures"]), key=lambda figure: figure.section)
    machine = data["machine"]
    rows = [f"{data['mode'].capitalize()} run on {machine['date']}, {machine['cores']} cores ({machine['cpu']}), "
            f"Python {machine['python']}, redis-server {machine['redis_server']}, "
            + ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
            + f"; {machine['wall_seconds']:.0f} s in all.", "",
            "| section | figure | median | min–max | runs | target | result |", "|---|---|---|---|---|---|---|"]
    for f in figures:
        rows.append(f"| {f.section} | {f.name} | {f.median_text()} | {f.range_text()} | {len(f.values)} | "
                    f"{f.target_text()} | {f.result} |")
    return "\n".join(rows) + "\n"


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())
