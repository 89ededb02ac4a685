"""ytcaption: a job server that turns YouTube videos into Whisper transcripts.

``app`` is the HTTP API (Flask) and the ``ytcaption`` command; ``app.core`` is what the API, the
workers, the scheduler and the CLI share, and imports neither Flask nor the ML stack. This file
imports nothing at module level, so that importing ``app.core`` from a worker loads no Flask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: settings from defaults, then the environment, then ``config``."""
    from flask import Flask

    from app import api, dashboard, error_handlers, extensions, health, metrics, openai_api, openapi, request_body
    from app.core.logs import configure_logging
    from app.core.settings import Settings

    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["YTCAPTION_SETTINGS"] = settings
    app.json.sort_keys = False
    configure_logging(settings.log_level)

    extensions.init_app(app, settings)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    metrics.init_app(app, app.extensions["ytcaption"].redis, metrics_token, public=settings.metrics_public)
    error_handlers.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(openapi.bp)
    dashboard.init_app(app, settings)
    app.wsgi_app = request_body.StallDeadline(app.wsgi_app)
    return app
