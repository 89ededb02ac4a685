"""API-key authentication: ``Authorization: Bearer <api_key>``."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.errors import Unauthorized
from app.services import services
from app.users import User


def authenticated(view):
    """Run ``view`` only for a request with a valid API key; the user is in ``g.user``."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, api_key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not api_key.strip():
            raise Unauthorized()
        user = services().users.authenticate(api_key.strip())
        if user is None:
            raise Unauthorized("The API key is not valid.")
        g.user = user
        return view(*args, **kwargs)

    return wrapper


def current_user() -> User:
    return g.user
