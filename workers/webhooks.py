"""Delivering a webhook's event: the job ``deliver``, which a worker runs from the ``webhooks`` queue.

Each attempt checks the callback URL against the callback policy again (``WEBHOOK_ALLOWED_HOSTS``,
as this worker has it now), signs the body with the user's secret as it is now (Standard Webhooks:
``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) and POSTs it. The request goes to an
address the check returned, the name still in ``Host`` and in TLS (SNI and the certificate's
name), so a second DNS answer cannot send it elsewhere. Redirects are followed here, not by the
HTTP library: each hop's ``Location`` passes the policy before it is requested, and gets the same
POST (at most ``MAX_REDIRECTS``).

What an attempt's outcome means:

- a 2xx: delivered;
- a timeout, a connection refused or reset, a name that does not resolve, a 5xx, a 408 or a 429:
  RQ retries the job on its schedule (``app.core.webhooks.retry_delays``), until its retries run out;
- any other answer, a URL or redirect the policy refuses, too many redirects: failed for good
  (``retries_left = 0``, as a transcription job's permanent failure).

Each attempt is recorded (``app.core.webhooks.record_attempt``) before the job ends, successful or not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urljoin, urlsplit, urlunsplit

import certifi
import urllib3
from rq import get_current_job
from standardwebhooks import Webhook
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as RequestTimedOut

from app.core import webhooks
from app.core.errors import BadRequest, YtcaptionError
from app.core.schemas import iso
from app.core.urls import check_callback_url, resolve_host
from workers import context

log = logging.getLogger(__name__)

USER_AGENT = "ytcaption-webhooks/1"
#: Statuses whose ``Location`` is followed, each with the same POST.
REDIRECTS = (301, 302, 303, 307, 308)
#: A failure answer worth trying again later (besides 5xx): the receiver's timeout, or "too many requests".
RETRIED_STATUSES = (408, 429)
#: Bytes of an answer read at most (its content is not used).
MAX_ANSWER_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DeliveryFailed(YtcaptionError):
    """An attempt did not deliver the event; ``permanent``: no later attempt would."""

    code = "webhook_delivery_failed"

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class _Unresolved(Exception):
    """The callback's host did not resolve: a DNS failure is worth another attempt (not an ``OSError``,
    which the URL check would take for a host that does not exist)."""


@dataclass
class _Outcome:
    status: int | None = None
    error: str | None = None
    url: str | None = None  # the last hop's, when redirected
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None


def deliver(event_id: str, subject_id: str, url: str, body: str, owner_id: str, keep: int) -> int:
    """POST the event ``body`` to ``url``, signed with ``owner_id``'s secret; return the HTTP status.

    Raises ``DeliveryFailed`` when it was not delivered: RQ retries the job unless that is permanent.
    """
    job = get_current_job()
    connection = job.connection
    settings = context.settings()
    secret = webhooks.signing_secret(connection, owner_id)
    moment = datetime.now(timezone.utc)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
    }
    started = time.monotonic()
    outcome = _attempt(url, body.encode(), headers, settings.webhook_allowed_hosts)
    latency_ms = round((time.monotonic() - started) * 1000)
    if outcome.delivered:
        state, counted = "delivered", "delivered"
    elif outcome.permanent or not job.retries_left:
        state, counted = "failed", "failed"
    else:
        state, counted = "pending", "retried"
    attempt = {"at": iso(moment), "status": outcome.status, "latency_ms": latency_ms, "error": outcome.error,
               "url": outcome.url}
    webhooks.record_attempt(connection, subject_id, attempt, state, counted, keep)
    log.info("webhook_attempt", extra={"event_id": event_id, "status": outcome.status, "outcome": counted,
                                       "latency_ms": latency_ms})
    if outcome.delivered:
        return outcome.status
    if outcome.permanent:
        job.retries_left = 0  # RQ retries on any failure; a permanent one must fail at once
    raise DeliveryFailed(f"Webhook {event_id} not delivered to {outcome.url or url}: {outcome.error}",
                         outcome.permanent)


def _attempt(url: str, body: bytes, headers: dict[str, str], allowed_hosts: tuple[str, ...]) -> _Outcome:
    """One attempt: the URL and up to ``MAX_REDIRECTS`` redirects, each hop checked before it is requested."""
    redirected = None
    status = None
    for hop in range(webhooks.MAX_REDIRECTS + 1):
        try:
            addresses = check_callback_url(url, allowed_hosts, resolve=_resolve)
        except _Unresolved as exc:
            return _Outcome(status, str(exc), redirected)
        except BadRequest as exc:
            what = f"redirect to {url} refused" if redirected else "callback URL refused"
            return _Outcome(status, f"{what}: {exc.message}", redirected, permanent=True)
        try:
            status, location = _post(url, addresses, body, headers)
        except (HTTPError, OSError) as exc:  # a timeout, a connection refused or reset, a broken answer
            return _Outcome(None, _reason(exc), redirected)
        if status in REDIRECTS and location:
            url = redirected = urljoin(url, location)
            continue
        if 200 <= status < 300:
            return _Outcome(status, None, redirected)
        retried = status >= 500 or status in RETRIED_STATUSES
        return _Outcome(status, f"HTTP {status}", redirected, permanent=not retried)
    return _Outcome(status, f"more than {webhooks.MAX_REDIRECTS} redirects", redirected, permanent=True)


def _resolve(host: str) -> list[str]:
    try:
        return resolve_host(host)
    except OSError as exc:
        raise _Unresolved(f"the callback host {host!r} does not resolve ({exc.strerror or exc})") from None


def _post(url: str, addresses: list[str] | None, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
    """POST to one of ``addresses`` (the host's name itself for a listed host: None), each in turn while
    the connection fails; the answer's status and ``Location``."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    port = parts.port or _DEFAULT_PORTS[scheme]
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    request_headers = {**headers, "Host": parts.netloc}  # the URL passed the policy: no credentials in it
    tls = {"server_hostname": host, "assert_hostname": host, "cert_reqs": "CERT_REQUIRED",
           "ca_certs": certifi.where()} if scheme == "https" else {}
    pool_class = urllib3.HTTPSConnectionPool if scheme == "https" else urllib3.HTTPConnectionPool
    failure: Exception | None = None
    for address in addresses or [host]:
        with pool_class(address, port, timeout=urllib3.Timeout(total=webhooks.HOP_TIMEOUT), retries=False,
                        maxsize=1, **tls) as pool:
            try:
                answer = pool.urlopen("POST", path, body=body, headers=request_headers, redirect=False,
                                      retries=False, preload_content=False, assert_same_host=False)
            except NewConnectionError as exc:  # refused or unreachable (an IPv6 address without a route): the next
                failure = exc
                continue
            try:
                answer.read(MAX_ANSWER_BYTES)
            except (HTTPError, OSError):
                pass  # the status is what counts; an answer whose body stalls or breaks has said it
            finally:
                answer.release_conn()
            return answer.status, answer.headers.get("Location")
    raise failure


def _reason(exc: BaseException) -> str:
    """A few words on a failed request, without the library's object reprs."""
    if isinstance(exc, NewConnectionError):  # before timeouts: urllib3 makes it a kind of ConnectTimeoutError
        return "connection failed: " + str(exc).rsplit(": ", 1)[-1][:200]
    if isinstance(exc, (RequestTimedOut, TimeoutError)):
        return f"no answer within {webhooks.HOP_TIMEOUT} s"
    if isinstance(exc, ProtocolError):  # ('Connection aborted.', the error underneath)
        cause = next((arg for arg in exc.args if isinstance(arg, OSError)), None)
        if cause is not None:
            return f"connection broken: {(cause.strerror or str(cause))[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
