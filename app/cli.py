"""The ``ytcaption`` command: run the stack, a worker, and manage users."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.errors import YtcaptionError
from app.core.formats import FORMATS
from app.core.jobs import QUEUE_NAMES
from app.core.logs import configure_logging
from app.core.schemas import iso
from app.core.settings import Settings
from app.core.users import ROLES, TIERS


def _friendly_errors(command):
    """Print ytcaption's errors as one sentence instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except YtcaptionError as exc:
            raise click.ClickException(exc.message) from None
        except RedisConnectionError as exc:
            raise click.ClickException(
                f"Cannot reach Redis ({exc}): is 'ytcaption up' running, or REDIS_URL (or REDIS_SENTINELS) set?"
            ) from None

    return wrapper


def _settings() -> Settings:
    settings = Settings.load()
    configure_logging(settings.log_level)
    return settings


@click.group()
def cli() -> None:
    """ytcaption: transcribe YouTube videos with Whisper, through a Redis job queue."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds to.")
@_friendly_errors
def up(host: str) -> None:
    """Start Redis (embedded without REDIS_URL or REDIS_SENTINELS), the API, a worker, the scheduler.

    Ctrl-C stops all. A running job may finish within WORKER_SHUTDOWN_GRACE seconds, else goes back to its queue;
    Ctrl-C again sends it back at once.
    """
    from app.stack import run_stack

    sys.exit(run_stack(_settings(), host=host))


@cli.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--name", help="Worker name (default: RQ's, unique per process).")
@_friendly_errors
def worker(queues: tuple[str, ...], burst: bool, max_jobs: int | None, name: str | None) -> None:
    """Work on QUEUES in priority order (default: express standard batch), webhook deliveries first.

    One worker runs one job at a time; run several for more (one per core is a good start). Every worker
    delivers webhooks (the webhooks queue) before it takes a job from QUEUES.
    """
    unknown = [queue for queue in queues if queue not in QUEUE_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown queue {unknown[0]!r}; choose from {', '.join(QUEUE_NAMES)}",
                                 param_hint="QUEUES")
    # The worker side (yt-dlp, the engine host) is imported only here.
    from workers.worker import run

    run(_settings(), queues or QUEUE_NAMES, burst=burst, max_jobs=max_jobs, name=name)


@cli.command()
@_friendly_errors
def scheduler() -> None:
    """Register the periodic jobs (idempotent) and run rq-scheduler, in UTC."""
    from app.core.services import connect
    from scheduler.registration import run

    run(connect(_settings()))


@cli.command()
@click.argument("what", type=click.Choice(["worker", "scheduler"]))
@_friendly_errors
def check(what: str) -> None:
    """Health check for containers: exit 0 if a WHAT runs here (worker) or is scheduling (scheduler)."""
    import socket

    from rq import Worker
    from rq_scheduler import Scheduler

    from app.core.services import connect
    from scheduler.registration import PERIODIC_JOBS

    connection = connect(_settings())
    if what == "worker":
        here = [w.name for w in Worker.all(connection=connection) if w.hostname == socket.gethostname()]
        if not here:
            raise click.ClickException(f"No worker of host {socket.gethostname()} is registered in Redis.")
        click.echo(f"workers here: {', '.join(here)}")
    else:
        scheduled = {job.id for job in Scheduler(connection=connection).get_jobs()}
        missing = [job.id for job in PERIODIC_JOBS if job.id not in scheduled]
        if missing:
            raise click.ClickException(f"Periodic jobs not scheduled: {', '.join(missing)}.")
        click.echo(f"scheduled: {', '.join(sorted(scheduled))}")


@cli.command()
@click.option("--no-model", is_flag=True, help="Do not load the model (a few seconds, and its memory).")
@_friendly_errors
def doctor(no_model: bool) -> None:
    """Check this machine: Redis, the model, yt-dlp and its JavaScript runtime, cookies, proxies, disk.

    One line per check (ok, warn or fail, with the fix); exits 1 if any check fails.
    """
    from workers.doctor import Check, run_checks

    try:
        settings = _settings()
    except YtcaptionError as exc:  # a setting that stops every process: no other check can run
        click.echo(Check("settings", "fail", exc.message, "correct it (docs/settings.md)").line())
        sys.exit(1)
    checks = run_checks(settings, model=not no_model)
    for check in checks:
        click.echo(check.line())
    if any(check.status == "fail" for check in checks):
        sys.exit(1)


@cli.group()
def users() -> None:
    """Create users, change their tier, role or quota, show usage, rotate webhook secrets."""


def _services():
    from app.core.services import Services

    return Services.from_settings(_settings())


@users.command("create")
@click.option("--email", required=True, help="The user's email address (unique).")
@click.option("--tier", type=click.Choice(TIERS), default="free", show_default=True)
@click.option("--admin", is_flag=True, help="Give the user the admin role (sees every job).")
@click.option("--quota", type=click.IntRange(min=0), help="Jobs per month, instead of the tier's default.")
@_friendly_errors
def users_create(email: str, tier: str, admin: bool, quota: int | None) -> None:
    """Create a user and print its API key once, alone on the last line."""
    user, api_key = _services().users.create(email, tier, role="admin" if admin else "user", quota=quota)
    click.echo(f"Created user {user.id} ({user.email}, tier {user.tier}, role {user.role}).")
    click.echo("Its API key follows; it is shown only now (only a hash of it is stored):")
    click.echo(api_key)


@users.command("list")
@_friendly_errors
def users_list() -> None:
    """List users with this month's usage (never their keys)."""
    svc = _services()
    for user in svc.users.all():
        quota = svc.quota.usage(user)
        click.echo(f"{user.id}  {user.tier:<10}  {user.role:<5}  {quota.used:>6}/{quota.limit:<6}  {user.email}")


@users.command("set")
@click.argument("user")
@click.option("--tier", type=click.Choice(TIERS))
@click.option("--role", type=click.Choice(ROLES))
@click.option("--quota", help="Jobs per month, or 'default' for the tier's quota.")
@_friendly_errors
def users_set(user: str, tier: str | None, role: str | None, quota: str | None) -> None:
    """Change USER's (id or email) tier, role or monthly quota."""
    svc = _services()
    found = svc.users.find(user)
    if quota is None:
        new_quota = "keep"
    elif quota == "default":
        new_quota = None
    elif quota.isdigit():
        new_quota = int(quota)
    else:
        raise click.BadParameter("a number of jobs, or 'default'", param_hint="--quota")
    changed = svc.users.update(found, tier=tier, role=role, quota=new_quota)
    click.echo(f"{changed.email}: tier {changed.tier}, role {changed.role}, "
               f"quota {svc.quota.limit_for(changed)} jobs/month")


@users.command("usage")
@click.argument("user")
@_friendly_errors
def users_usage(user: str) -> None:
    """Show USER's (id or email) usage this month."""
    svc = _services()
    quota = svc.quota.usage(svc.users.find(user))
    click.echo(f"{quota.period}: {quota.used} of {quota.limit} jobs used, {quota.remaining} left; "
               f"resets {iso(quota.resets_at)}")


@users.command("webhook-secret")
@click.argument("user")
@_friendly_errors
def users_webhook_secret(user: str) -> None:
    """Give USER (id or email) a new webhook signing secret; printed once, alone on the last line.

    Deliveries from now on, retries of earlier events included, are signed with it: the old one stops verifying.
    """
    from app.core.webhooks import rotate_secret

    svc = _services()
    found = svc.users.find(user)
    secret = rotate_secret(svc.redis, found.id)
    click.echo(f"New webhook signing secret for {found.email}; webhooks are signed with it from now on, and it "
               f"is shown only now:")
    click.echo(secret)


@cli.group()
def keys() -> None:
    """Issue, list and revoke API keys."""


@keys.command("create")
@click.argument("user")
@_friendly_errors
def keys_create(user: str) -> None:
    """Issue another key for USER (id or email); printed once, alone on the last line."""
    svc = _services()
    found = svc.users.find(user)
    api_key = svc.users.issue_key(found.id)
    click.echo(f"New API key for {found.email}; it is shown only now:")
    click.echo(api_key)


@keys.command("list")
@click.argument("user")
@_friendly_errors
def keys_list(user: str) -> None:
    """List USER's keys: id, first characters, creation time."""
    svc = _services()
    for key in svc.users.keys(svc.users.find(user).id):
        click.echo(f"{key.key_id}  {key.hint}  created {time.strftime('%Y-%m-%d %H:%M', time.gmtime(key.created_at))}")


@keys.command("revoke")
@click.argument("key_id")
@_friendly_errors
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (see 'keys list'): it stops working at once."""
    key = _services().users.revoke_key(key_id)
    click.echo(f"Revoked {key.key_id} ({key.hint}).")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="URL|FILE...")
@click.option("--server", envvar="YTCAPTION_SERVER", default="http://127.0.0.1:8000", show_default=True,
              show_envvar=True, help="The ytcaption server to use.")
@click.option("--key", envvar="YTCAPTION_API_KEY", show_envvar=True, help="Your API key (required).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="txt", show_default=True,
              help="The transcript's format.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the transcript to this file (a directory with several inputs) instead of stdout.")
@click.option("--language", help="auto (the default) or an ISO 639-1 code, e.g. en.")
@click.option("--model", help="One of the server's Whisper models (default: the server's).")
@click.option("--no-wait", is_flag=True, help="Only submit: print the job ids and exit.")
@click.option("--no-cache", is_flag=True, help="Transcribe afresh, even if the server has the transcript already.")
def transcribe(inputs: tuple[str, ...], server: str, key: str | None, fmt: str, output: Path | None,
               language: str | None, model: str | None, no_wait: bool, no_cache: bool) -> None:
    """Transcribe YouTube URLs or local audio/video files on a ytcaption server.

    A progress bar per input on stderr; the transcripts on stdout, or in -o. Ctrl-C cancels the jobs.
    Exits 0 when every transcript was written, 1 when one was not, 130 on Ctrl-C.
    """
    if not key:
        raise click.UsageError("No API key: pass --key or set YTCAPTION_API_KEY "
                               "(a server's admin creates one with 'ytcaption users create').")
    # Imported here: rich and the HTTP client are not needed by the other commands.
    from app.client import Options, transcriber

    options = Options(fmt=fmt, output=output, language=language, model=model, wait=not no_wait, cache=not no_cache)
    try:
        client = transcriber(list(inputs), server, key, options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(client.run())


def main() -> None:
    cli(prog_name="ytcaption")
