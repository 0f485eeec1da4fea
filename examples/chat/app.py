"""A chat room: a plain Werkzeug application made live with Turbo Streams.

Run it from the repository root::

    export TURBO_SECRET="$(python -c 'import secrets; print(secrets.token_urlsafe())')"
    turbo-gevent examples.chat.app:app --bind 127.0.0.1:8000

then open http://127.0.0.1:8000/ in two windows. A message posted in one
shows at once in every open page: the POST handler renders it with the same
template as the page, broadcasts ``streams.append("messages", html)`` on the
stream ``messages``, and answers ``303 See Other``, as Turbo Drive expects of
a form submission.

Environment:
    TURBO_SECRET   key that signs the stream tokens; without one a random key
                   is used and the middleware says so.
    TURBO_JS_URL   where pages load Turbo from [a CDN build of Turbo 8].
    TURBO_JS_PATH  a local ``turbo.es2017-umd.js`` to serve at
                   ``/static/turbo.js`` instead (no internet needed).

The name a visitor chooses is kept in a ``user`` cookie and given to the
middleware as the viewer's id through ``identify``. It is a name, not a
login: anyone can choose any name.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect, send_file
from werkzeug.wrappers import Request, Response

from turbo_gevent import Hub, TurboStreams, streams
from turbo_gevent.templating import template_lookup

TURBO_JS_URL = os.environ.get(
    "TURBO_JS_URL", "https://cdn.jsdelivr.net/npm/@hotwired/turbo@8.0.23/dist/turbo.es2017-umd.js"
)
TURBO_JS_PATH = os.environ.get("TURBO_JS_PATH")

STREAM = "messages"
MAX_NAME, MAX_TEXT = 40, 500

lookup = template_lookup([Path(__file__).parent / "templates"])
hub = Hub()


@dataclass(frozen=True)
class Message:
    id: int
    name: str
    text: str
    time: str = field(default_factory=lambda: datetime.now().strftime("%H:%M"))


# The last 100 messages, so that a page opened later shows the conversation.
history: deque[Message] = deque(maxlen=100)
_ids = itertools.count(1)


def render_page(request: Request, error: str = "", status: int = 200) -> Response:
    html = lookup.get_template("index.html").render(
        messages=list(history),
        name=request.cookies.get("user", ""),
        error=error,
        turbo_js=("/static/turbo.js" if TURBO_JS_PATH else TURBO_JS_URL),
    )
    return Response(html, status=status, mimetype="text/html")


def index(request: Request) -> Response:
    return render_page(request)


def post_message(request: Request) -> Response:
    name = request.form.get("name", "").strip()
    text = request.form.get("text", "").strip()
    if not name or not text or len(name) > MAX_NAME or len(text) > MAX_TEXT:
        # Turbo renders a 4xx answer to a form in place; a 200 it would refuse.
        error = f"A message needs a name (at most {MAX_NAME} characters) and a text (at most {MAX_TEXT})."
        return render_page(request, error, status=422)
    message = Message(next(_ids), name, text)
    history.append(message)
    html = lookup.get_template("_message.html").render(message=message)
    hub.broadcast(STREAM, streams.append("messages", html))
    response = redirect("/", code=303)
    response.set_cookie("user", name, max_age=365 * 24 * 3600, httponly=True, samesite="Lax")
    return response


def turbo_js(request: Request) -> Response:
    if not TURBO_JS_PATH:
        raise NotFound()
    return send_file(TURBO_JS_PATH, request.environ, mimetype="text/javascript", max_age=3600)


url_map = Map(
    [
        Rule("/", endpoint=index, methods=["GET"]),
        Rule("/messages", endpoint=post_message, methods=["POST"]),
        Rule("/static/turbo.js", endpoint=turbo_js, methods=["GET"]),
    ]
)


@Request.application
def legacy_app(request: Request) -> Response:
    try:
        endpoint, _ = url_map.bind_to_environ(request.environ).match()
        return endpoint(request)
    except HTTPException as exc:
        return exc


def identify(environ: dict) -> str | None:
    """The viewer's id for the stream tokens: the name they chose, if any."""
    return Request(environ).cookies.get("user") or None


app = TurboStreams(legacy_app, hub=hub, secret=os.environ.get("TURBO_SECRET") or None, identify=identify)
