"""A chat room: a plain Werkzeug application made live with Turbo Streams.

Run it from the repository root::

    export TURBO_SECRET="$(python -c 'import secrets; print(secrets.token_urlsafe())')"
    turbo-gevent examples.chat.app:app --bind 127.0.0.1:8000

then open http://127.0.0.1:8000/ in two windows. A message posted in one
shows at once in every open page: the POST handler renders it with the same
template as the page and broadcasts ``streams.append("messages", html)`` on
the stream ``messages``. A *private note* is not kept and not broadcast to
the room: ``hub.broadcast_to_user(name, ...)`` pushes it to the pages open
under the sender's name, and to no one else.

With Redis, several processes serve the same room (each gunicorn worker has
its own hub; Redis carries every broadcast to all of them, and keeps the
history they all show)::

    REDIS_URL=redis://127.0.0.1:6379/0 TURBO_SECRET=... \\
        gunicorn -k turbo_gevent.worker.Worker -w 2 --bind 127.0.0.1:8000 examples.chat.app:app

Environment:
    TURBO_SECRET   key that signs the stream tokens; the same in every process.
                   Without one each process makes up its own, and a page
                   rendered by one worker cannot listen through another.
    REDIS_URL      keep the history in Redis and broadcast through it, so that
                   several processes serve one room [in this process only].
    TURBO_JS_URL   where pages load Turbo from [a CDN build of Turbo 8].
    TURBO_JS_PATH  a local ``turbo.es2017-umd.js`` to serve at
                   ``/static/turbo.js`` instead (no internet needed).
    CHAT_DEBUG     ``1`` adds ``GET /_debug/connections``: this process's pid,
                   its open connections by user, and the history ids it sees.

The name a visitor chooses is kept in a ``user`` cookie and given to the
middleware as the viewer's id through ``identify``. It is a name, not a
login: anyone can choose any name, and whoever takes a name also gets the
private notes sent to it from then on.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect, send_file
from werkzeug.wrappers import Request, Response

from turbo_gevent import BrokerError, Hub, RedisBroker, TurboStreams, streams
from turbo_gevent.templating import template_lookup

TURBO_JS_URL = os.environ.get(
    "TURBO_JS_URL", "https://cdn.jsdelivr.net/npm/@hotwired/turbo@8.0.23/dist/turbo.es2017-umd.js"
)
TURBO_JS_PATH = os.environ.get("TURBO_JS_PATH")
REDIS_URL = os.environ.get("REDIS_URL") or None
CHAT_DEBUG = os.environ.get("CHAT_DEBUG") == "1"

STREAM = "messages"
MAX_NAME, MAX_TEXT = 40, 500
HISTORY_SIZE = 100
TURBO_STREAM_MIMETYPE = "text/vnd.turbo-stream.html"

lookup = template_lookup([Path(__file__).parent / "templates"])


@dataclass(frozen=True)
class Message:
    id: int | str
    name: str
    text: str
    time: str = field(default_factory=lambda: datetime.now().strftime("%H:%M"))


class Unavailable(Exception):
    """The shared history cannot be read or written (Redis is down)."""


class MemoryHistory:
    """The last messages, in this process: enough for one process."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._messages: deque[Message] = deque(maxlen=size)
        self._ids = itertools.count(1)

    def add(self, name: str, text: str) -> Message:
        message = Message(next(self._ids), name, text)
        self._messages.append(message)
        return message

    def recent(self) -> list[Message]:
        return list(self._messages)


class RedisHistory:
    """The last messages in a Redis list, newest first, shared by every process.

    Ids come from INCR, so that two processes never give the same one (pages
    use them as element ids).
    """

    def __init__(self, url: str, size: int = HISTORY_SIZE, prefix: str = "chat") -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        # No connection yet: redis-py connects on the first command, in the
        # worker that runs it, after gevent has patched the sockets.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.size = size
        self.key, self.id_key = f"{prefix}:history", f"{prefix}:last_id"

    def add(self, name: str, text: str) -> Message:
        try:
            message = Message(self.redis.incr(self.id_key), name, text)
            with self.redis.pipeline() as pipe:  # MULTI: push and trim together
                pipe.lpush(self.key, json.dumps(asdict(message)))
                pipe.ltrim(self.key, 0, self.size - 1)
                pipe.execute()
        except self._errors as exc:
            raise Unavailable(str(exc)) from exc
        return message

    def recent(self) -> list[Message]:
        try:
            items = self.redis.lrange(self.key, 0, self.size - 1)
        except self._errors as exc:
            raise Unavailable(str(exc)) from exc
        return [Message(**json.loads(item)) for item in reversed(items)]


if REDIS_URL:
    # The one change a second process needs: a hub that broadcasts through Redis.
    hub = Hub(broker=RedisBroker(REDIS_URL, channel_prefix="chat"))
    history: MemoryHistory | RedisHistory = RedisHistory(REDIS_URL)
else:
    hub = Hub()
    history = MemoryHistory()

UNAVAILABLE = "The chat cannot reach its Redis right now: try again in a moment."


def render_form(name: str, private: bool = False, error: str = "") -> str:
    return lookup.get_template("_form.html").render(name=name, private=private, error=error)


def render_page(request: Request, error: str = "", status: int = 200) -> Response:
    try:
        messages = history.recent()
    except Unavailable:
        messages, error, status = [], UNAVAILABLE, 503
    html = lookup.get_template("index.html").render(
        messages=messages,
        form=render_form(request.cookies.get("user", ""), error=error),
        turbo_js=("/static/turbo.js" if TURBO_JS_PATH else TURBO_JS_URL),
    )
    return Response(html, status=status, mimetype="text/html")


def index(request: Request) -> Response:
    return render_page(request)


def post_message(request: Request) -> Response:
    name = request.form.get("name", "").strip()
    text = request.form.get("text", "").strip()
    private = request.form.get("private") == "1"
    known_as = request.cookies.get("user")
    # Turbo renders a 4xx or 5xx answer to a form in place; a 200 it would refuse.
    if not name or not text or len(name) > MAX_NAME or len(text) > MAX_TEXT:
        error = f"A message needs a name (at most {MAX_NAME} characters) and a text (at most {MAX_TEXT})."
        return render_page(request, error, status=422)
    if private and name != known_as:
        # The page's stream listens as the name it was rendered for.
        error = "A private note goes to the pages open under your name: send a public message first to take this name."
        return render_page(request, error, status=422)
    try:
        if private:
            # Kept nowhere: pushed to the pages of this name, in every process.
            note = Message(uuid.uuid4().hex, name, text)
            html = lookup.get_template("_message.html").render(message=note, private=True)
            hub.broadcast_to_user(name, streams.append("messages", html))
        else:
            message = history.add(name, text)
            html = lookup.get_template("_message.html").render(message=message)
            hub.broadcast(STREAM, streams.append("messages", html))
    except (Unavailable, BrokerError):
        return render_page(request, UNAVAILABLE, status=503)

    if name == known_as and _accepts_turbo_stream(request):
        # The message reaches this page over its WebSocket, like every other
        # page; the answer only clears the form, and the page stays as it is
        # (private notes included).
        form = render_form(name, private=private)
        return Response(str(streams.replace("message_form", form)), mimetype=TURBO_STREAM_MIMETYPE)
    # A first message or a new name (or no Turbo): 303, and Turbo's visit
    # renders the page again, with a stream that listens as this name.
    response = redirect("/", code=303)
    response.set_cookie("user", name, max_age=365 * 24 * 3600, httponly=True, samesite="Lax")
    return response


def _accepts_turbo_stream(request: Request) -> bool:
    """Whether Turbo sent the form: it asks for streams by name, never by ``*/*``."""
    return any(mimetype == TURBO_STREAM_MIMETYPE for mimetype, _ in request.accept_mimetypes)


def turbo_js(request: Request) -> Response:
    if not TURBO_JS_PATH:
        raise NotFound()
    return send_file(TURBO_JS_PATH, request.environ, mimetype="text/javascript", max_age=3600)


def debug_connections(request: Request) -> Response:
    """Which process answered, who it serves, and the history it sees."""
    users = Counter(c.user_id for c in hub.connections() if c.user_id is not None)
    try:
        ids = [message.id for message in history.recent()]
    except Unavailable:
        ids = None
    body = {"pid": os.getpid(), "connections": hub.stats()["connections"], "users": users, "history": ids}
    return Response(json.dumps(body), mimetype="application/json")


rules = [
    Rule("/", endpoint=index, methods=["GET"]),
    Rule("/messages", endpoint=post_message, methods=["POST"]),
    Rule("/static/turbo.js", endpoint=turbo_js, methods=["GET"]),
]
if CHAT_DEBUG:
    rules.append(Rule("/_debug/connections", endpoint=debug_connections, methods=["GET"]))
url_map = Map(rules)


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
