"""ytcaption: a job server that turns YouTube videos into Whisper transcripts.

This package is the Flask API and the core shared with workers and scheduler. It never
imports the ML stack: jobs are enqueued by import path (see ``app.jobs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API: settings from defaults, then the environment, then ``config``."""
    from app import api, dashboard, errors_http, health, metrics, openapi, services
    from app.logs import configure_logging
    from app.settings import Settings

    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["YTCAPTION_SETTINGS"] = settings
    app.json.sort_keys = False
    configure_logging(settings.log_level)

    services.init_app(app, settings)
    metrics.init_app(app, app.extensions["ytcaption"].redis, settings.metrics_token)
    errors_http.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    dashboard.init_app(app, settings.effective_redis_url)
    return app
