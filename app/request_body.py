"""A request body that stops arriving ends its request with a 400 within seconds.

gunicorn reads a body from the client's socket only as the app asks for it, and waits as long as
the client keeps the connection open: a request announcing ``Content-Length: 1000`` that sends ten
bytes held a worker 30 s and then failed with a 500. This WSGI middleware gives the socket a
timeout while the app reads: a body that makes no progress for ``STALL_TIMEOUT`` seconds answers
400 ``incomplete_body`` and the connection is closed. The timeout stays on the socket while the
answer is written: a client that stops reading it for that long is disconnected too. (A request's
line and headers have their own deadline, gunicorn's keep-alive timeout: ``app/gunicorn_conf.py``.)
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from werkzeug.exceptions import BadRequest

#: Seconds a request body may make no progress (the same rule as nginx's ``client_body_timeout``).
STALL_TIMEOUT = 5.0


class IncompleteBody(BadRequest):
    name = "Incomplete Body"  # the JSON error code: incomplete_body
    description = (f"The request body stopped arriving for {STALL_TIMEOUT:.0f} s before it was complete: "
                   "send the whole body, and a Content-Length that matches it.")


class StallDeadline:
    """Wrap a WSGI app: under gunicorn, reading the body stops at the first ``timeout`` s without data."""

    def __init__(self, wsgi_app, timeout: float = STALL_TIMEOUT) -> None:
        self.wsgi_app = wsgi_app
        self.timeout = timeout

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")  # gunicorn's own key: other servers have their own limits
        if sock is not None:
            sock.settimeout(self.timeout)
            environ["wsgi.input"] = _GuardedInput(environ["wsgi.input"], sock)
        return self.wsgi_app(environ, start_response)


class _GuardedInput:
    """``wsgi.input`` whose reads turn a socket timeout into ``IncompleteBody``."""

    def __init__(self, stream, sock: socket.socket) -> None:
        self._stream = stream
        self._sock = sock

    def _guarded(self, read, *args):
        try:
            return read(*args)
        except TimeoutError:
            # Nothing more of this connection is read: gunicorn would otherwise wait again to skip the
            # rest of the body before the next request. The answer can still be written.
            try:
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            raise IncompleteBody() from None

    def read(self, *args):
        return self._guarded(self._stream.read, *args)

    def readline(self, *args):
        return self._guarded(self._stream.readline, *args)

    def readlines(self, *args):
        return self._guarded(self._stream.readlines, *args)

    def __iter__(self):
        return iter(self.readline, b"")
