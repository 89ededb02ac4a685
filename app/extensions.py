"""The API's services: built once in ``init_app`` and kept in ``app.extensions["ytcaption"]``."""

from __future__ import annotations

from flask import Flask, current_app

from app.core.services import Services
from app.core.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions["ytcaption"] = Services.from_settings(settings)


def services() -> Services:
    """The services of the current Flask app."""
    return current_app.extensions["ytcaption"]
