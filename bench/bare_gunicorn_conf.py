"""gunicorn settings for ``bench/bare_app.py``: the API's server model (``app/gunicorn_conf.py``:
gevent workers, each yielding before a request), without its access log and metrics, so that the
submit load compares the apps and not two ways of serving them."""

worker_class = "gevent"
keepalive = 5


def pre_request(worker, req):
    import gevent

    gevent.sleep(0)
