"""The ``ytcaption`` command: run the stack, a worker, and manage users."""

from __future__ import annotations

import functools
import logging
import sys

import click
from redis.exceptions import ConnectionError as RedisConnectionError

from app.errors import YtcaptionError
from app.jobs import QUEUE_NAMES
from app.settings import Settings
from app.users import TIERS


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
                f"Cannot reach Redis ({exc}): is 'ytcaption up' running, or REDIS_URL set?"
            ) from None

    return wrapper


def _settings() -> Settings:
    settings = Settings.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


@click.group()
def cli() -> None:
    """ytcaption: transcribe YouTube videos with Whisper, through a Redis job queue."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds to.")
@_friendly_errors
def up(host: str) -> None:
    """Start Redis (embedded unless REDIS_URL is set), the API and a worker; Ctrl-C stops all."""
    from app.stack import run_stack

    sys.exit(run_stack(_settings(), host=host))


@cli.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--name", help="Worker name (default: RQ's, unique per process).")
@_friendly_errors
def worker(queues: tuple[str, ...], burst: bool, max_jobs: int | None, name: str | None) -> None:
    """Work on QUEUES in priority order (default: express standard batch)."""
    unknown = [queue for queue in queues if queue not in QUEUE_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown queue {unknown[0]!r}; choose from {', '.join(QUEUE_NAMES)}",
                                 param_hint="QUEUES")
    from workers.worker import run  # the worker side is imported only here

    run(_settings(), queues or QUEUE_NAMES, burst=burst, max_jobs=max_jobs, name=name)


@cli.group()
def users() -> None:
    """Create and list users."""


@users.command("create")
@click.option("--email", required=True, help="The user's email address (unique).")
@click.option("--tier", type=click.Choice(TIERS), default="free", show_default=True)
@_friendly_errors
def users_create(email: str, tier: str) -> None:
    """Create a user and print its API key once, alone on the last line."""
    from app.services import Services

    user, api_key = Services.from_settings(_settings()).users.create(email, tier)
    click.echo(f"Created user {user.id} ({user.email}, tier {user.tier}).")
    click.echo("Its API key follows; it is shown only now (only a hash of it is stored):")
    click.echo(api_key)


@users.command("list")
@_friendly_errors
def users_list() -> None:
    """List users (never their keys)."""
    from app.services import Services

    for user in Services.from_settings(_settings()).users.all():
        click.echo(f"{user.id}  {user.tier:<10}  {user.email}")


def main() -> None:
    cli(prog_name="ytcaption")
