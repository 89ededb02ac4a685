"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint

from app.core.errors import ServiceUnavailable
from app.extensions import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive (it does not touch Redis)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """The API can serve requests: Redis answers."""
    try:
        services().redis.ping()
    except Exception as exc:  # any failure to reach Redis means "not ready"
        raise ServiceUnavailable(f"Redis is not reachable: {exc.__class__.__name__}.") from None
    return {"status": "ready"}
