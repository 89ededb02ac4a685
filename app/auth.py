"""API-key authentication: ``Authorization: Bearer <api_key>``."""

from __future__ import annotations

import time
from functools import wraps

from flask import g, request

from app.core.errors import Forbidden, Unauthorized
from app.core.users import User
from app.extensions import services


def authenticated(view):
    """Run ``view`` only for a request with a valid API key; the user is in ``g.user``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, api_key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            raise Unauthorized()
        svc = services()
        now = time.time()
        # One round trip: the key, its user, and this request counted against the key's rate.
        found = svc.users.authenticate(api_key.strip(), counter_prefix=svc.rate_limiter.window(now),
                                       counter_ttl=svc.rate_limiter.counter_ttl)
        if found is None:
            raise Unauthorized("The API key is not valid (or was revoked).")
        g.user = found.user
        g.response_headers = svc.rate_limiter.check(found.user, found.requests, now)
        return view(*args, **kwargs)

    return wrapper


def admin_only(view):
    """Like ``authenticated``, and the key's user must be an admin (403 otherwise)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user().is_admin:
            raise Forbidden()
        return view(*args, **kwargs)

    return authenticated(wrapper)


def add_response_headers(response):
    """Rate-limit headers on every authenticated answer, errors included."""
    for name, value in g.get("response_headers", {}).items():
        response.headers.setdefault(name, value)
    return response


def current_user() -> User:
    return g.user
