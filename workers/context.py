"""What a worker process hands to the jobs it runs: its settings and its engine.

``ytcaption worker`` calls ``use()`` before it forks work horses, so every job (and every RQ
callback) sees the settings the worker was started with and talks to the worker's engine host.
Under a plain ``rq worker``, which never calls ``use()``, a job reads the environment and loads
the model in its own work horse.
"""

from __future__ import annotations

from app.core.settings import Settings
from workers.engines import Engine, create_engine

_settings: Settings | None = None
_engine: Engine | None = None


def use(settings: Settings | None, engine: Engine | None = None) -> None:
    """Make ``settings`` and ``engine`` the ones jobs in this process (and its work horses) use."""
    global _settings, _engine
    _settings, _engine = settings, engine


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = create_engine(settings())
    return _engine
