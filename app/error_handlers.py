"""Render every error as JSON: ``{"error": code, "message": sentence}`` with the right status.

Under ``/v1/`` (the OpenAI-compatible API, ``app.openai_api``) in OpenAI's shape instead:
``{"error": {"message", "type", "param", "code"}}``, so that OpenAI's SDKs raise their own errors.

Covers ytcaption's own errors, Flask/Werkzeug's HTTP errors (404 for unknown routes, 405,
413, ...), an unreachable Redis or one that refuses writes for now (503 with ``Retry-After``) and,
as a last resort, any bug (500 without a traceback in the body; the traceback goes to the log).
"""

from __future__ import annotations

import logging
import re

from flask import Flask, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from app.core import schemas
from app.core.errors import ServiceUnavailable, YtcaptionError

log = logging.getLogger(__name__)


def _json(body: schemas.Error, status: int, param: str | None = None):
    if request.path.startswith("/v1/"):
        response = jsonify({"error": {"message": body.message, "type": _openai_type(body.error, status),
                                      "param": param, "code": body.error}})
    else:
        response = jsonify(body.model_dump(mode="json", exclude_unset=True))
    response.status_code = status
    return response


def _openai_type(code: str, status: int) -> str:
    """OpenAI's error ``type`` for a status (and, for a 429, the code)."""
    if status == 429:
        return "insufficient_quota" if code == "quota_exceeded" else "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_response(error: YtcaptionError):
    response = _json(schemas.Error(error=error.code, message=error.message, **error.details), error.status,
                     getattr(error, "param", None))
    response.headers.update(error.headers)
    return response


def _http_error(exc: HTTPException):
    code = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    message = exc.description or exc.name
    if exc.code == 413 and request.max_content_length:
        message = f"The request body is larger than {request.max_content_length // 1024} KiB, the most accepted here."
    response = _json(schemas.Error(error=code, message=message), exc.code or 500)
    headers = dict(exc.get_headers())
    for name in ("Allow", "Retry-After"):
        if name in headers:
            response.headers[name] = headers[name]
    return response


def _redis_down(exc: Exception):
    log.warning("Redis unreachable: %s", exc)
    return error_response(ServiceUnavailable())


#: Redis answers that mean "not now": too few replicas for ``min-replicas-to-write``, or a master
#: just demoted in a failover (with REDIS_URL pointing at it; the Sentinel client reconnects itself).
_REFUSED_FOR_NOW = ("NOREPLICAS", "READONLY")


def _redis_full(exc: OutOfMemoryError):
    log.warning("Redis is out of memory: %s", exc)
    return error_response(ServiceUnavailable("The job store is full for now (Redis reached its maxmemory); "
                                             "nothing was accepted. Try again later."))


def _redis_refuses(exc: ResponseError):
    if not any(word in str(exc) for word in _REFUSED_FOR_NOW):
        return unexpected(exc)
    log.warning("Redis refuses writes: %s", exc)
    return error_response(ServiceUnavailable("The job store refuses writes for now (too few replicas, or a "
                                             "failover under way); try again shortly."))


def unexpected(exc: Exception):
    """A bug: 500 ``internal_error``, the traceback in the log only."""
    log.exception("Unhandled error")
    return error_response(YtcaptionError())


def _json_redirect(response):
    """Werkzeug's own redirects (``/rq`` to ``/rq/``, ``//`` to ``/``) answer JSON like everything else."""
    if 300 <= response.status_code < 400 and response.mimetype == "text/html" and "Location" in response.headers:
        moved = schemas.Error(error="moved", message=f"This is at {response.headers['Location']}.")
        response.set_data(moved.model_dump_json(exclude_unset=True))
        response.mimetype = "application/json"
    return response


def init_app(app: Flask) -> None:
    app.after_request(_json_redirect)
    app.register_error_handler(YtcaptionError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RedisConnectionError, _redis_down)
    app.register_error_handler(RedisTimeoutError, _redis_down)
    app.register_error_handler(OutOfMemoryError, _redis_full)
    app.register_error_handler(ResponseError, _redis_refuses)
    app.register_error_handler(Exception, unexpected)
