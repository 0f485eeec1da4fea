"""The request being served, known to template code without passing it.

:class:`~turbo_gevent.TurboStreams` binds the WSGI environ of each request it
passes to the app; :func:`turbo_gevent.templating.turbo_stream_source` reads
it back. The binding lives in a :class:`contextvars.ContextVar`, which gevent
keeps per greenlet (and Python per thread), so concurrent requests never see
each other's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

#: environ key under which the middleware leaves itself for template code.
MIDDLEWARE_KEY = "turbo_gevent.middleware"

_current_environ: ContextVar[dict | None] = ContextVar("turbo_gevent_environ", default=None)


def bind(environ: dict) -> Any:
    """Make ``environ`` the current request; returns a token for :func:`unbind`."""
    return _current_environ.set(environ)


def unbind(token: Any) -> None:
    try:
        _current_environ.reset(token)
    except ValueError:
        # Reset from another context (a response iterated elsewhere): the
        # binding there is simply left to be replaced by the next request.
        pass


def current_environ(environ: dict | None = None) -> dict:
    """The environ of the request being served through ``TurboStreams``.

    Raises ``RuntimeError`` outside such a request, or when ``environ`` is
    given but did not pass through the middleware.
    """
    if environ is None:
        environ = _current_environ.get()
        if environ is None:
            raise RuntimeError(
                "no current request: call this while serving a request that passed "
                "through turbo_gevent.TurboStreams, or pass environ="
            )
    if MIDDLEWARE_KEY not in environ:
        raise RuntimeError(
            "this environ did not pass through turbo_gevent.TurboStreams: wrap the "
            "WSGI app with TurboStreams(app, ...)"
        )
    return environ
