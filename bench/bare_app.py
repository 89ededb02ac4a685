"""The yardstick of section 3: a bare Flask app whose one route only enqueues an RQ job.

No authentication, validation, quota, rate limit or metrics: what is left is Flask, gunicorn
and one ``Queue.enqueue`` by import path, the floor under any API that enqueues a job per request.
Run it as ``gunicorn 'bench.bare_app:create_bare_app()'`` with ``REDIS_URL`` set.
"""

from __future__ import annotations

import os

from flask import Flask, request
from redis import Redis
from rq import Queue

#: The queue the API puts an enterprise user's job on: the same Redis list for both.
QUEUE = "express"


def create_bare_app() -> Flask:
    app = Flask(__name__)
    queue = Queue(QUEUE, connection=Redis.from_url(os.environ["REDIS_URL"]))

    @app.post("/submit")
    def submit():
        body = request.get_json(force=True)
        job = queue.enqueue("workers.jobs.transcribe_video", kwargs={"url": body["youtube_url"]})
        return {"job_id": job.id}, 202

    return app
