"""Prometheus metrics at ``/metrics``, correct across processes and machines.

Job metrics live in Redis, not in process memory: the API counts submits, workers count
finished jobs and their durations (work horses are short-lived processes, their memory is
gone after each job), and queue lengths and workers are read from RQ at scrape time. HTTP
metrics come from prometheus-flask-exporter; under gunicorn they use prometheus_client's
multiprocess mode (``app/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR``), so every
gunicorn process's requests are counted whichever process answers the scrape.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from redis import Redis
from rq import Queue, Worker

from app.core import stats
from app.core.errors import MetricsClosed, Unauthorized
from app.core.jobs import QUEUE_NAMES
from app.core.webhooks import WEBHOOK_QUEUE
from app.openapi import operation


@dataclass(frozen=True)
class JobMetric:
    name: str
    kind: str  # counter, histogram or gauge
    labels: tuple[str, ...]
    help: str


#: The job metrics /metrics serves (docs/api.md lists them from here).
SUBMITTED = JobMetric("ytcaption_jobs_submitted", "counter", ("queue", "task_name"), "Jobs accepted by the API.")
COMPLETED = JobMetric("ytcaption_jobs_completed", "counter", ("queue", "status"),
                      "Jobs that ended: finished, failed (for good, after retries) or cancelled.")
RUN_TIME = JobMetric("ytcaption_job_duration_seconds", "histogram", ("task_name",),
                     "Run time of jobs that ended (buckets 1 s to 1 h).")
QUEUE_LENGTH = JobMetric("ytcaption_queue_length", "gauge", ("queue",),
                         "Jobs waiting in each queue (`webhooks`: deliveries due, not those waiting for a retry).")
RECOVERED = JobMetric("ytcaption_jobs_recovered", "counter", ("reason",),
                      "Jobs put back on their queue: fetched but not started by a worker that died or froze "
                      "(worker_lost), running on one (abandoned: one attempt used), or found in no queue, "
                      "registry or fetched list for over a minute (orphan).")
PROXY_DOWNLOADS = JobMetric(
    "ytcaption_proxy_downloads", "counter", ("proxy", "outcome"),
    "Downloads through each of YTDLP_PROXIES (named scheme://host:port, without credentials): success, or the "
    "failure after which the job tried the next proxy (proxy_error: the connection refused, reset or timed out, "
    "407 or 5xx from the proxy; bot_check: YouTube's \"confirm you're not a bot\").")
ACTIVE_WORKERS = JobMetric("ytcaption_active_workers", "gauge", ("queue",), "Workers listening to each queue.")
RESULT_CACHE = JobMetric("ytcaption_result_cache", "counter", ("outcome",),
                         "Submits of a YouTube video or an upload the result cache answered at once (hit) or not "
                         "(miss); `cache: false` submits are not counted.")
COALESCED = JobMetric("ytcaption_coalesced_submits", "counter", (),
                      "Submits that followed identical work in flight instead of starting their own.")
WEBHOOK_DELIVERIES = JobMetric(
    "ytcaption_webhook_deliveries", "counter", ("outcome",),
    "Attempts to deliver a webhook: delivered (a 2xx), retried (a timeout, a connection error, 5xx, 408 or 429, "
    "with retries left) or failed (the event given up: another 4xx, a refused URL or redirect, or the last retry).")
JOB_METRICS = (SUBMITTED, COMPLETED, RECOVERED, RUN_TIME, QUEUE_LENGTH, ACTIVE_WORKERS, PROXY_DOWNLOADS,
               RESULT_CACHE, COALESCED, WEBHOOK_DELIVERIES)


class JobCollector(Collector):
    """Reads the job metrics from Redis and RQ when Prometheus scrapes."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection

    def collect(self):
        submitted = CounterMetricFamily(SUBMITTED.name, SUBMITTED.help, labels=SUBMITTED.labels)
        for field, value in self.connection.hgetall(stats.SUBMITTED).items():
            submitted.add_metric(field.decode().split("|"), int(value))
        yield submitted

        completed = CounterMetricFamily(COMPLETED.name, COMPLETED.help, labels=COMPLETED.labels)
        for field, value in self.connection.hgetall(stats.COMPLETED).items():
            completed.add_metric(field.decode().split("|"), int(value))
        yield completed

        recovered = CounterMetricFamily(RECOVERED.name, RECOVERED.help, labels=RECOVERED.labels)
        counts = {field.decode(): int(value) for field, value in self.connection.hgetall(stats.RECOVERED).items()}
        for reason in ("worker_lost", "abandoned", "orphan"):
            recovered.add_metric([reason], counts.get(reason, 0))
        yield recovered

        sharing = {field.decode(): int(value) for field, value in self.connection.hgetall(stats.SHARING).items()}
        cache = CounterMetricFamily(RESULT_CACHE.name, RESULT_CACHE.help, labels=RESULT_CACHE.labels)
        for outcome in ("hit", "miss"):
            cache.add_metric([outcome], sharing.get(outcome, 0))
        yield cache
        yield CounterMetricFamily(COALESCED.name, COALESCED.help, value=sharing.get("coalesced", 0))

        proxies = CounterMetricFamily(PROXY_DOWNLOADS.name, PROXY_DOWNLOADS.help, labels=PROXY_DOWNLOADS.labels)
        for field, value in self.connection.hgetall(stats.PROXY_DOWNLOADS).items():
            proxies.add_metric(field.decode().rsplit("|", 1), int(value))
        yield proxies

        deliveries = CounterMetricFamily(WEBHOOK_DELIVERIES.name, WEBHOOK_DELIVERIES.help,
                                         labels=WEBHOOK_DELIVERIES.labels)
        counts = {field.decode(): int(value) for field, value in self.connection.hgetall(stats.WEBHOOKS).items()}
        for outcome in stats.WEBHOOK_OUTCOMES:
            deliveries.add_metric([outcome], counts.get(outcome, 0))
        yield deliveries

        duration = HistogramMetricFamily(RUN_TIME.name, RUN_TIME.help, labels=RUN_TIME.labels)
        for key in self.connection.scan_iter(stats.DURATION.format("*")):
            fields = {k.decode(): v for k, v in self.connection.hgetall(key).items()}
            buckets = [(stats.bound_label(bound), int(fields.get(stats.bound_label(bound), 0)))
                       for bound in stats.BUCKETS]
            duration.add_metric([key.decode().rsplit(":", 1)[-1]], buckets, float(fields.get("sum", 0)))
        yield duration

        lengths = GaugeMetricFamily(QUEUE_LENGTH.name, QUEUE_LENGTH.help, labels=QUEUE_LENGTH.labels)
        workers = GaugeMetricFamily(ACTIVE_WORKERS.name, ACTIVE_WORKERS.help, labels=ACTIVE_WORKERS.labels)
        for name in (*QUEUE_NAMES, WEBHOOK_QUEUE):
            queue = Queue(name, connection=self.connection)
            lengths.add_metric([name], queue.count)
            workers.add_metric([name], Worker.count(connection=self.connection, queue=queue))
        yield lengths
        yield workers


def init_app(app: Flask, connection: Redis, token: str | None, public: bool = False) -> None:
    """Count HTTP requests and serve ``/metrics``: to ``Authorization: Bearer <token>`` only, or to anyone
    if ``public``; with neither, to no one (``403 metrics_closed`` names the two settings)."""
    from prometheus_flask_exporter import PrometheusMetrics

    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # A registry per app: several apps in one process (tests) must not clash in the global one.
    http_registry = CollectorRegistry()
    PrometheusMetrics(app, path=None, registry=http_registry, group_by="url_rule", defaults_prefix="flask")
    jobs = JobCollector(connection)

    @app.get("/metrics")
    @operation("Prometheus metrics (with METRICS_TOKEN as a bearer token)", {200: {"text/plain": str}},
               errors=(401, 403, 503), authenticated=False,
               error_text={401: "Not METRICS_TOKEN", 403: "Closed: neither METRICS_TOKEN nor METRICS_PUBLIC is set"})
    def metrics():
        """Job and HTTP metrics in Prometheus's text format. Send `Authorization: Bearer <METRICS_TOKEN>`; a
        server with `METRICS_PUBLIC=true` answers anyone, one with neither setting no one."""
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.")
        elif not public:
            raise MetricsClosed()
        registry = CollectorRegistry()
        if multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_Forward(http_registry))
        registry.register(jobs)
        return Response(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()
