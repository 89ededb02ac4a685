"""rq-dashboard at ``/rq``, inside the API, for admins only.

It replaces Flower. The browser signs in with HTTP Basic auth: any user name, an admin's API key
as the password (an ``Authorization: Bearer <admin key>`` header works too). Everyone else gets
401. A browser sends the Basic credentials it holds with any request to the dashboard, also one a
page on another site makes it send, so an action (requeue, delete, empty, compact: every route
that takes POST, whatever the method) must come from the dashboard's own pages: its ``Origin``
(or, without one, its ``Referer``) must name this server, else ``403 cross_site_request``. The
dashboard's own scripts POST with jQuery, and browsers send ``Origin`` with every POST.
rq-dashboard reads the same Redis as the API, with RQ's default serializer, like every
ytcaption process. rq-dashboard makes its own client from ``RQ_DASHBOARD_REDIS_URL`` (on every
request); with ``REDIS_SENTINELS`` that is its ``redis+sentinel://`` form, with the passwords in its
own two settings, so it follows a failover as the API does.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import Flask, redirect, request

from app.core.errors import CrossSiteRequest, JobNotFailed, NotFound, Unauthorized
from app.core.services import SENTINEL_TIMEOUTS, TIMEOUTS
from app.core.settings import Settings
from app.error_handlers import error_response, unexpected
from app.extensions import services

PREFIX = "/rq"


class DashboardUnauthorized(Unauthorized):
    def __init__(self) -> None:
        super().__init__("The dashboard needs an admin: sign in with any user name and an admin API key.")
        self.headers = {"WWW-Authenticate": 'Basic realm="ytcaption dashboard"'}


def init_app(app: Flask, settings: Settings) -> None:
    import rq_dashboard
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq_dashboard.web import setup_rq_connection

    app.config.update(dashboard_config(settings))
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    setup_rq_connection(app)  # rq-dashboard 0.9 does this only in its own CLI
    actions = action_endpoints(app, rq_dashboard.blueprint.name)

    @app.before_request
    def _admins_only_and_actions_from_here():
        if request.blueprint == rq_dashboard.blueprint.name:
            _check_admin()
            if request.method not in SAFE_METHODS or request.endpoint in actions:
                _check_same_origin()

    @app.errorhandler(NoSuchJobError)
    @app.errorhandler(InvalidJobOperation)
    def _dashboard_job_errors(exc: Exception):
        """A job deleted, expired or requeued since the admin's page showed it: 404 or 409, not a 500."""
        if request.blueprint != rq_dashboard.blueprint.name:
            return unexpected(exc)  # the API catches these itself: one that gets here is a bug
        if isinstance(exc, NoSuchJobError):
            return error_response(NotFound(f"No job {request.view_args.get('job_id')!r}."))
        return error_response(JobNotFailed())

    @app.get(PREFIX)
    def dashboard_without_slash():
        """``/rq`` as typed: sign in here, then on to ``/rq/``. Redirected first, a browser would be
        asked for the password at ``/rq/`` and forget the one in the URL (``http://admin:KEY@host/rq``)."""
        _check_admin()
        return redirect(PREFIX + "/", 308)


def dashboard_config(settings: Settings) -> dict[str, str | None]:
    """rq-dashboard's settings for ytcaption's Redis (its public ones: ``RQ_DASHBOARD_REDIS_*``)."""
    if not settings.redis_sentinels:
        return {"RQ_DASHBOARD_REDIS_URL": settings.effective_redis_url}
    # rq-dashboard shows this URL on its pages (with any user:password@ masked): no password in it.
    hosts = ",".join(f"{host}:{port}" for host, port in settings.sentinel_addresses)
    query = urlencode({**TIMEOUTS, **{f"sentinel_{name}": value for name, value in SENTINEL_TIMEOUTS.items()}})
    secrets = {"RQ_DASHBOARD_REDIS_PASSWORD": settings.redis_password,
               "RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD": settings.redis_sentinel_password}
    return {"RQ_DASHBOARD_REDIS_URL": f"redis+sentinel://{hosts}/{settings.redis_sentinel_master}/0?{query}",
            **{key: secret.get_secret_value() if secret else None for key, secret in secrets.items()}}


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def action_endpoints(app: Flask, blueprint: str) -> frozenset[str]:
    """The dashboard's endpoints that change something: those that take POST (rq-dashboard 0.9's
    ``requeue_all`` takes GET as well, so the method of a request alone does not tell)."""
    return frozenset(rule.endpoint for rule in app.url_map.iter_rules()
                     if rule.endpoint.startswith(blueprint + ".") and rule.methods - SAFE_METHODS)


def _check_same_origin() -> None:
    # Host and port only, not the scheme: behind a proxy that ends TLS the API sees http while the
    # browser says https, and no other site can serve a page from this host and port.
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or _host_and_port(urlsplit(source).netloc) != _host_and_port(request.host):
        raise CrossSiteRequest()


def _host_and_port(netloc: str) -> str:
    netloc = netloc.lower()
    return netloc.removesuffix(":80").removesuffix(":443")


def _check_admin() -> None:
    if request.authorization and request.authorization.type == "basic":
        api_key = request.authorization.password or ""
    else:
        scheme, _, api_key = request.headers.get("Authorization", "").partition(" ")
        api_key = api_key if scheme.lower() == "bearer" else ""
    found = services().users.authenticate(api_key.strip()) if api_key else None
    if found is None or not found.user.is_admin:
        raise DashboardUnauthorized()
