"""Mako helpers: the ``<turbo-stream-source>`` tag, and ERB-style tags.

A page listens to streams with one element, whose URL points back at the
server that rendered it::

    from turbo_gevent.templating import template_lookup

    lookup = template_lookup(["templates"])
    html = lookup.get_template("room.html").render(room=room)

and in ``templates/room.html``, where ``<%= %>`` escapes and ``<%- %>`` does
not (trusted HTML only)::

    <h1><%= room.name %></h1>
    ${turbo_stream_source(None, f"room:{room.id}")}
    <div id="messages"><%- rendered_messages %></div>

:func:`turbo_stream_source` builds an absolute ``ws://`` or ``wss://`` URL
from the request being served (scheme, ``Host`` header, ``SCRIPT_NAME``),
with one signed token per stream, so the page may only listen to what the
server rendered it for. Behind a proxy, wrap the app in Werkzeug's
``ProxyFix`` so that the environ already says ``https`` and the public host;
``X-Forwarded-*`` headers are never read here, since any client can send
them. The host is checked against the middleware's ``trusted_hosts``.

:func:`template_lookup` returns a :class:`mako.lookup.TemplateLookup` that
escapes ``${}`` by default (``default_filters=["h"]``, which lets
:class:`~markupsafe.Markup` such as the stream builders' output through),
knows the helpers here without passing them to ``render``, and accepts the
ERB tags of the Rwf framework through :func:`erb_preprocessor`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlencode

from mako.exceptions import SyntaxException
from mako.lookup import TemplateLookup
from markupsafe import Markup, escape
from werkzeug.wsgi import get_host

from turbo_gevent import context

__all__ = ["turbo_stream_source", "rwf_turbo_stream", "erb_preprocessor", "template_lookup"]

# What stays unquoted in a URL path: the WHATWG path-segment set, and "%" so
# that an already quoted path is not quoted twice (as Werkzeug does).
_PATH_SAFE = "!$&'()*+,/:;=@%"

_IMPORTS = ["from turbo_gevent.templating import turbo_stream_source, rwf_turbo_stream"]


def turbo_stream_source(path: str | None = None, *streams: str, environ: dict | None = None) -> Markup:
    """``<turbo-stream-source>`` for the current request, listening to ``streams``.

    Arguments:
        path: the stream endpoint below the app's mount point; ``None`` for
            the middleware's own ``path`` (``"/turbo-stream"`` by default).
        streams: stream names, each signed for the current viewer.
        environ: the request; by default the one being served.

    Raises ``RuntimeError`` outside a request through ``TurboStreams``,
    ``ValueError`` for a path other than the middleware's or an empty
    stream name, and Werkzeug's ``SecurityError`` (a ``BadRequest``) for a host not
    in ``trusted_hosts``.
    """
    environ = context.current_environ(environ)
    middleware = environ[context.MIDDLEWARE_KEY]
    if path is None:
        path = middleware.path
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"the stream path must start with '/', not {path!r}")
    if path != middleware.path:
        # Only the middleware's path is served, and its tokens are for it.
        raise ValueError(f"{path!r} is not the stream path of this TurboStreams ({middleware.path!r})")
    for stream in streams:
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"a stream name must be a non-empty str, not {stream!r}")

    scheme = "wss" if environ["wsgi.url_scheme"] == "https" else "ws"
    host = get_host(environ, trusted_hosts=middleware.trusted_hosts)
    script_name = environ.get("SCRIPT_NAME", "").rstrip("/")
    try:
        # A WSGI string: the request's bytes, decoded as latin-1.
        raw_script_name = script_name.encode("latin-1")
    except UnicodeEncodeError:  # from a server that decoded it as UTF-8
        raw_script_name = script_name.encode("utf-8")
    root = quote(raw_script_name, safe=_PATH_SAFE)
    url = f"{scheme}://{host}{root}{quote(path, safe=_PATH_SAFE)}"
    if streams:
        viewer = middleware.viewer(environ)
        url += "?" + urlencode([("stream", middleware.signer.sign(s, viewer)) for s in streams])
    return Markup(f'<turbo-stream-source src="{escape(url)}"></turbo-stream-source>')


def rwf_turbo_stream(path: str | None = None, *, environ: dict | None = None) -> Markup:
    """The Rwf framework's name for a stream source listening to no named stream."""
    return turbo_stream_source(path, environ=environ)


# Mako comment lines and <%text>/<%doc> blocks are copied unread; <%- and
# <%= open an ERB expression.
_ERB_SCAN = re.compile(
    r"(?P<verbatim>^[ \t]*##[^\n]*"
    r"|<%(?P<block>text|doc)(?:\s[^>]*)?>.*?(?:</%(?P=block)>|\Z))"
    r"|<%(?P<erb>[-=])",
    re.M | re.S,
)
_ERB_CLOSE = "%>"
_FILTERS = {"-": "n, str", "=": "n, h"}


def erb_preprocessor(text: str) -> str:
    """Turn ERB output tags into Mako expressions, for a Mako ``preprocessor``.

    ``<%= expr %>`` prints ``expr`` HTML-escaped, exactly once whatever the
    ``default_filters`` (``__html__`` objects such as Markup pass through);
    ``<%- expr %>`` prints it raw, with no filter but ``str``. Every other Mako
    construct is left as it is, as are ``##`` comment lines and ``<%text>``
    and ``<%doc>`` blocks, and the line count is kept so that errors point
    at the right line.

    The expression ends at the first ``%>`` after which it is valid Python,
    so ``%>``, ``}``, ``|`` and quotes inside strings, and expressions over
    several lines, all work. Not supported: ``#`` comments inside the tag,
    ERB's ``-%>`` trimming and ``<%%`` escape, and ``<%=`` inside a Mako
    ``<% %>`` block's strings (write it as ``"<%" "="`` there). Raises
    :class:`mako.exceptions.SyntaxException` for a tag with no valid end.
    """
    out = []
    pos = 0
    while (match := _ERB_SCAN.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        if match.group("erb") is None:
            out.append(match.group(0))
            pos = match.end()
            continue
        expr, pos = _erb_expression(text, match)
        out.append(f"${{({expr}) | {_FILTERS[match.group('erb')]}}}")
    out.append(text[pos:])
    return "".join(out)


def _erb_expression(text: str, match: re.Match) -> tuple[str, int]:
    """The expression opened by ``match``, and the position after its ``%>``."""
    start = match.end()
    end = text.find(_ERB_CLOSE, start)
    while end != -1:
        expr = text[start:end]
        if expr.strip():  # "()" compiles, but is no expression
            try:
                compile(f"({expr})", "<erb>", "eval")
            except (SyntaxError, ValueError):
                pass
            else:
                return expr, end + len(_ERB_CLOSE)
        end = text.find(_ERB_CLOSE, end + 1)
    line_start = text.rfind("\n", 0, match.start()) + 1
    raise SyntaxException(
        f"{match.group(0)} tag without a Python expression ending in %>",
        text,
        text.count("\n", 0, match.start()) + 1,
        match.start() - line_start + 1,
        None,
    )


def template_lookup(
    directories: str | os.PathLike | Iterable[str | os.PathLike], **options: Any
) -> TemplateLookup:
    """A Mako ``TemplateLookup`` set up for Turbo pages.

    Arguments:
        directories: a directory, or a list of them, to find templates in.
        options: passed to ``TemplateLookup``, with these defaults:
            ``default_filters=["h"]``, ``input_encoding="utf-8"``. A
            ``preprocessor`` (one or a list) runs after
            :func:`erb_preprocessor`, so it sees plain Mako; ``imports`` are
            added to the one that makes :func:`turbo_stream_source` and
            :func:`rwf_turbo_stream` known to every template, and may
            shadow them.
    """
    if isinstance(directories, (str, os.PathLike)):
        directories = [directories]
    preprocessor = options.pop("preprocessor", None)
    if preprocessor is None:
        preprocessors: list[Callable[[str], str]] = []
    elif callable(preprocessor):
        preprocessors = [preprocessor]
    else:
        preprocessors = list(preprocessor)
    options.setdefault("default_filters", ["h"])
    options.setdefault("input_encoding", "utf-8")
    options["imports"] = _IMPORTS + list(options.get("imports") or [])
    return TemplateLookup(
        directories=[os.fspath(d) for d in directories],
        preprocessor=[erb_preprocessor, *preprocessors],
        **options,
    )
