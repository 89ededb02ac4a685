"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint

from app.core import schemas
from app.core.errors import ServiceUnavailable
from app.extensions import services
from app.openapi import operation

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation("Liveness", {200: schemas.Health}, authenticated=False)
def healthz():
    """The process is alive (it does not touch Redis)."""
    return schemas.Health(status="ok").model_dump()


@bp.get("/readyz")
@operation("Readiness", {200: schemas.Ready}, errors=(503,), authenticated=False)
def readyz():
    """The API can serve requests: Redis answers."""
    try:
        services().redis.ping()
    except Exception as exc:  # any failure to reach Redis means "not ready"
        raise ServiceUnavailable(f"Redis is not reachable: {exc.__class__.__name__}.") from None
    return schemas.Ready(status="ready").model_dump()
