"""The app the integration tests serve in a real gevent process.

Configured by the JSON in ``TURBO_TEST_CONFIG`` (keyword arguments of
``TurboStreams``, plus ``"identify": "header"`` to take the user id from an
``X-User`` header or a ``user`` cookie, ``"authorize_deny": [streams]``, and
``"redis_url"`` for a Redis hub). Besides a plain page it has test-only
routes to act inside the server process:

    POST /_test/broadcast   form: stream (or all=1, or user=ID), html
    GET  /_test/stats       the hub's counters as JSON
"""

from __future__ import annotations

import json
import os

from werkzeug.wrappers import Request, Response

from turbo_gevent import Hub, TurboStreams


def _identify_from_request(environ):
    request = Request(environ)
    return request.headers.get("X-User") or request.cookies.get("user") or None


def build():
    config = json.loads(os.environ.get("TURBO_TEST_CONFIG", "{}"))
    hub_options = {}
    redis_url = config.pop("redis_url", None)
    if redis_url:
        from turbo_gevent.redis_broker import RedisBroker

        hub_options["broker"] = RedisBroker(redis_url, channel_prefix=config.pop("channel_prefix", "turbo_gevent"))
    if "refresh_on_reconnect" in config:
        hub_options["refresh_on_reconnect"] = config.pop("refresh_on_reconnect")
    hub = Hub(**hub_options)
    if config.pop("identify", None) == "header":
        config["identify"] = _identify_from_request
    deny = set(config.pop("authorize_deny", []))
    if deny:
        config["authorize"] = lambda environ, stream: stream not in deny

    holder = {}

    class TestRequest(Request):
        max_form_memory_size = None  # the tests broadcast fragments of a megabyte and more

    @TestRequest.application
    def app(request):
        middleware = holder["middleware"]
        if request.path == "/_test/broadcast" and request.method == "POST":
            html = request.form["html"]
            try:
                if request.form.get("all"):
                    middleware.hub.broadcast_all(html)
                elif request.form.get("user"):
                    middleware.hub.broadcast_to_user(request.form["user"], html)
                else:
                    middleware.hub.broadcast(request.form["stream"], html)
            except Exception as exc:  # reported to the test, which decides
                return Response(f"{type(exc).__name__}: {exc}", status=503)
            return Response("ok")
        if request.path == "/_test/stats":
            return Response(json.dumps(middleware.hub.stats()), mimetype="application/json")
        return Response("<p>plain page</p>", mimetype="text/html")

    middleware = holder["middleware"] = TurboStreams(app, hub=hub, **config)
    return middleware


app = build()


