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

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from rq import Queue, Worker

from app.core.errors import Unauthorized
from app.core.jobs import QUEUE_NAMES
from app.core.stats import BUCKETS, COMPLETED, DURATION, SUBMITTED, bound_label

class JobCollector(Collector):
    """Reads the job metrics from Redis and RQ when Prometheus scrapes."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection

    def collect(self):
        submitted = CounterMetricFamily("ytcaption_jobs_submitted", "Jobs accepted by the API.",
                                        labels=["queue", "task_name"])
        for field, value in self.connection.hgetall(SUBMITTED).items():
            submitted.add_metric(field.decode().split("|"), int(value))
        yield submitted

        completed = CounterMetricFamily("ytcaption_jobs_completed", "Jobs that ended, by final status.",
                                        labels=["queue", "status"])
        for field, value in self.connection.hgetall(COMPLETED).items():
            completed.add_metric(field.decode().split("|"), int(value))
        yield completed

        duration = HistogramMetricFamily("ytcaption_job_duration_seconds", "Run time of jobs that ended.",
                                         labels=["task_name"])
        for key in self.connection.scan_iter(DURATION.format("*")):
            fields = {k.decode(): v for k, v in self.connection.hgetall(key).items()}
            buckets = [(bound_label(bound), int(fields.get(bound_label(bound), 0))) for bound in BUCKETS]
            duration.add_metric([key.decode().rsplit(":", 1)[-1]], buckets, float(fields.get("sum", 0)))
        yield duration

        lengths = GaugeMetricFamily("ytcaption_queue_length", "Jobs waiting in each queue.", labels=["queue"])
        workers = GaugeMetricFamily("ytcaption_active_workers", "Workers listening to each queue.",
                                    labels=["queue"])
        for name in QUEUE_NAMES:
            queue = Queue(name, connection=self.connection)
            lengths.add_metric([name], queue.count)
            workers.add_metric([name], Worker.count(connection=self.connection, queue=queue))
        yield lengths
        yield workers


def init_app(app: Flask, connection: Redis, token: str | None) -> None:
    """Count HTTP requests and serve ``/metrics`` (behind ``METRICS_TOKEN`` when it is set)."""
    from prometheus_flask_exporter import PrometheusMetrics

    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # A registry per app: several apps in one process (tests) must not clash in the global one.
    http_registry = CollectorRegistry()
    PrometheusMetrics(app, path=None, registry=http_registry, group_by="url_rule", defaults_prefix="flask")
    jobs = JobCollector(connection)

    @app.get("/metrics")
    def metrics():
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.")
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
