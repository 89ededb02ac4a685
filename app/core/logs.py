"""Structured logs: one line per event, as logfmt (``key=value``), with the job id on every line
logged while a job runs.

    time=2026-11-28T21:01:22Z level=INFO logger=workers.jobs process=8274 job_id=1f0c… msg="downloaded" …

Tracebacks are folded into the same line (``exc=...`` with newlines escaped), so a log shipper
never splits one event into many.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "job_id"}


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@+" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class JobIdFilter(logging.Filter):
    """Adds ``job_id`` to every record logged while an RQ job runs in this process."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            from rq import get_current_job

            job = get_current_job()
            record.job_id = job.id if job is not None else None
        return True


class LogfmtFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
        }
        if getattr(record, "job_id", None):
            fields["job_id"] = record.job_id
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            fields.update(_request_fields(record.args))
        else:
            fields["msg"] = record.getMessage()
        fields.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_quote(value)}" for key, value in fields.items())


def _request_fields(atoms: Mapping[str, object]) -> dict[str, object]:
    """One request of gunicorn's access log (its "atoms") as fields."""
    fields = {"msg": "request", "method": atoms["m"], "path": atoms["U"], "query": atoms["q"], "status": atoms["s"],
              "bytes": atoms["B"], "ms": atoms["M"], "remote": atoms["h"], "agent": atoms["a"]}
    return {key: value for key, value in fields.items() if value not in ("", "-")}


def configure_logging(level: str) -> None:
    """Send every logger (ours, RQ's, gunicorn's app logs) through one logfmt handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_ytcaption", False):
            root.removeHandler(existing)
    handler._ytcaption = True
    root.addHandler(handler)
    root.setLevel(level)
