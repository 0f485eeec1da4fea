import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from mako.exceptions import SyntaxException
from mako.template import Template
from markupsafe import Markup
from werkzeug.exceptions import BadRequest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client, EnvironBuilder

from turbo_gevent import context, streams
from turbo_gevent.templating import (
    erb_preprocessor,
    rwf_turbo_stream,
    template_lookup,
    turbo_stream_source,
)
from turbo_gevent.tokens import StreamSigner


class FakeMiddleware:
    """What template code needs from TurboStreams, and nothing else."""

    def __init__(self, *, path="/turbo-stream", trusted_hosts=None, viewer=None):
        self.path = path
        self.trusted_hosts = trusted_hosts
        self.signer = StreamSigner("test secret")
        self._viewer = viewer
        self.viewed = []

    def viewer(self, environ):
        self.viewed.append(environ)
        return self._viewer


def make_environ(url="http://example.com/", middleware=None, **kwargs):
    parts = urlsplit(url)
    if parts.scheme:
        kwargs.setdefault("base_url", f"{parts.scheme}://{parts.netloc}/")
        url = parts.path + (f"?{parts.query}" if parts.query else "")
    environ = EnvironBuilder(url, **kwargs).get_environ()
    environ[context.MIDDLEWARE_KEY] = middleware or FakeMiddleware()
    return environ


def src_of(element):
    match = re.fullmatch(r'<turbo-stream-source src="([^"]*)"></turbo-stream-source>', element)
    assert match, element
    return html.unescape(match.group(1))


@pytest.fixture
def bound():
    """Bind an environ as the current request, as the middleware does."""
    tokens = []

    def bind(environ):
        tokens.append(context.bind(environ))
        return environ

    yield bind
    for token in reversed(tokens):
        context.unbind(token)


# -- the URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url, kwargs, expected",
    [
        ("http://example.com/", {}, "ws://example.com/turbo-stream"),
        ("https://example.com/", {}, "wss://example.com/turbo-stream"),
        ("http://example.com:8000/page", {}, "ws://example.com:8000/turbo-stream"),
        ("https://example.com:8443/page", {}, "wss://example.com:8443/turbo-stream"),
        ("http://example.com:80/", {}, "ws://example.com/turbo-stream"),
        ("https://example.com:443/", {}, "wss://example.com/turbo-stream"),
        ("https://example.com:80/", {}, "wss://example.com:80/turbo-stream"),
        ("http://127.0.0.1:5000/", {}, "ws://127.0.0.1:5000/turbo-stream"),
        ("/page", {"base_url": "https://example.com/app/"}, "wss://example.com/app/turbo-stream"),
        ("/page", {"base_url": "http://example.com/a/b"}, "ws://example.com/a/b/turbo-stream"),
        ("/page", {"base_url": "http://example.com/my app/"}, "ws://example.com/my%20app/turbo-stream"),
        ("/page", {"base_url": "http://example.com/caf\u00e9/"}, "ws://example.com/caf%C3%A9/turbo-stream"),
    ],
)
def test_url_follows_the_request(url, kwargs, expected):
    assert src_of(turbo_stream_source(environ=make_environ(url, **kwargs))) == expected


def test_exact_element():
    environ = make_environ("https://example.com/")
    assert turbo_stream_source(environ=environ) == (
        '<turbo-stream-source src="wss://example.com/turbo-stream"></turbo-stream-source>'
    )
    assert isinstance(turbo_stream_source(environ=environ), Markup)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/custom", "ws://example.com/custom"),
        ("/a b/ü", "ws://example.com/a%20b/%C3%BC"),
        ("/already%20quoted", "ws://example.com/already%20quoted"),
    ],
)
def test_path(path, expected):
    environ = make_environ(middleware=FakeMiddleware(path=path))
    assert src_of(turbo_stream_source(path, environ=environ)) == expected
    assert src_of(turbo_stream_source(None, environ=environ)) == expected


def test_a_path_the_middleware_does_not_serve_is_refused():
    environ = make_environ(middleware=FakeMiddleware(path="/custom"))
    with pytest.raises(ValueError, match="/custom"):
        turbo_stream_source("/turbo-stream", environ=environ)


@pytest.mark.parametrize("path", ["turbo-stream", "", "ws://evil.example/x", 5])
def test_path_must_start_with_a_slash(path):
    with pytest.raises(ValueError):
        turbo_stream_source(path, environ=make_environ())


def test_no_query_without_streams():
    middleware = FakeMiddleware()
    src = src_of(turbo_stream_source(environ=make_environ("http://example.com/?q=1", middleware=middleware)))
    assert "?" not in src
    assert middleware.viewed == []  # the viewer is only asked when signing


@pytest.mark.parametrize("viewer", [None, "user-42"])
def test_one_signed_token_per_stream_in_order(viewer):
    middleware = FakeMiddleware(viewer=viewer)
    environ = make_environ(middleware=middleware)
    src = src_of(turbo_stream_source(None, "room:1", "room:2", "room:1", environ=environ))
    url = urlsplit(src)
    assert (url.scheme, url.netloc, url.path) == ("ws", "example.com", "/turbo-stream")
    assert re.fullmatch(r"stream=[^&]+&stream=[^&]+&stream=[^&]+", url.query)
    tokens = parse_qs(url.query)["stream"]
    assert [middleware.signer.unsign(t, viewer) for t in tokens] == ["room:1", "room:2", "room:1"]
    assert middleware.viewed == [environ]


def test_query_is_escaped_in_the_attribute():
    element = turbo_stream_source(None, "a", "b", environ=make_environ())
    assert "&amp;stream=" in element
    assert "&stream=" not in element.replace("&amp;", "")


@pytest.mark.parametrize("stream", ["", None, 5, b"room"])
def test_stream_names_must_be_non_empty_str(stream):
    with pytest.raises(ValueError):
        turbo_stream_source(None, "ok", stream, environ=make_environ())


@pytest.mark.parametrize(
    "trusted_hosts, url",
    [
        (["example.com"], "http://evil.example/"),
        ([".example.com"], "http://example.com.evil.example/"),
    ],
)
def test_untrusted_host_is_a_bad_request(trusted_hosts, url):
    environ = make_environ(url, middleware=FakeMiddleware(trusted_hosts=trusted_hosts))
    with pytest.raises(BadRequest):
        turbo_stream_source(environ=environ)


@pytest.mark.parametrize("trusted_hosts", [["example.com"], [".example.com"], None])
def test_trusted_host_is_accepted(trusted_hosts):
    environ = make_environ("https://example.com:8443/", middleware=FakeMiddleware(trusted_hosts=trusted_hosts))
    assert src_of(turbo_stream_source(environ=environ)) == "wss://example.com:8443/turbo-stream"


# -- the current request ---------------------------------------------------


def test_uses_the_bound_request(bound):
    bound(make_environ("https://example.com/"))
    assert src_of(turbo_stream_source()) == "wss://example.com/turbo-stream"
    assert src_of(rwf_turbo_stream()) == "wss://example.com/turbo-stream"


@pytest.mark.parametrize("call", [lambda: turbo_stream_source(), lambda: rwf_turbo_stream()])
def test_outside_a_request(call):
    with pytest.raises(RuntimeError):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda environ: turbo_stream_source(environ=environ),
        lambda environ: rwf_turbo_stream(environ=environ),
    ],
)
def test_environ_that_skipped_the_middleware(call):
    with pytest.raises(RuntimeError):
        call(EnvironBuilder(base_url="https://example.com/").get_environ())


def test_environ_that_skipped_the_middleware_while_bound(bound):
    bound(EnvironBuilder(base_url="https://example.com/").get_environ())
    with pytest.raises(RuntimeError):
        turbo_stream_source()


def test_rwf_turbo_stream_takes_a_path():
    environ = make_environ(middleware=FakeMiddleware(path="/cable"))
    assert src_of(rwf_turbo_stream("/cable", environ=environ)) == "ws://example.com/cable"


# -- behind a proxy ----------------------------------------------------------


def rendering_app(environ, start_response):
    """A WSGI app that renders a source element, as the middleware would serve it."""
    environ[context.MIDDLEWARE_KEY] = FakeMiddleware()
    token = context.bind(environ)
    try:
        body = Template("${turbo_stream_source()}", default_filters=["h"]).render(
            turbo_stream_source=turbo_stream_source
        )
    finally:
        context.unbind(token)
    start_response("200 OK", [("Content-Type", "text/html")])
    return [body.encode()]


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}


@pytest.mark.parametrize(
    "app, headers, expected",
    [
        (ProxyFix(rendering_app, x_proto=1, x_host=1), FORWARDED, "wss://public.example/turbo-stream"),
        (ProxyFix(rendering_app, x_proto=1, x_host=1), {}, "ws://localhost/turbo-stream"),
        (ProxyFix(rendering_app, x_proto=1), FORWARDED, "wss://localhost/turbo-stream"),
        (rendering_app, FORWARDED, "ws://localhost/turbo-stream"),
    ],
)
def test_proxies_are_honoured_only_through_proxy_fix(app, headers, expected):
    response = Client(app).get("/page", headers=headers)
    assert src_of(response.text) == expected


# -- ERB tags ------------------------------------------------------------------


def render(source, **data):
    return Template(source, default_filters=["h"], preprocessor=erb_preprocessor).render(**data)


class Html:
    def __html__(self):
        return "<em>safe</em>"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("<%= x %>", "&lt;b&gt; &amp; &#34;q&#34;"),
        ("<%- x %>", '<b> & "q"'),
        ("<%=x%>", "&lt;b&gt; &amp; &#34;q&#34;"),
        ("<%= m %>|<%- m %>", "<i>m</i>|<i>m</i>"),
        ("<%= obj %>", "<em>safe</em>"),
        ("<%= 5 %>|<%- 5 %>|<%= None %>", "5|5|None"),
        ('<%= {"a": "}"}["a"] %>', "}"),
        ('<%= "50%>" %>', "50%&gt;"),
        ("<%= 1 |\n 2 %>", "3"),
        ('<%= "a" if x else\n  "b" %>', "a"),
        ("<%= f'{n:>3}' %>", "  5"),
        ("<%= n % 3 %>", "2"),
        ("<%= [v for v in (1, 2) if v > 1] %>", "[2]"),
        ('<%= "<%- x %>" %>', "&lt;%- x %&gt;"),
        ("${x}|<%= x %>|${x | n}", '&lt;b&gt; &amp; &#34;q&#34;|&lt;b&gt; &amp; &#34;q&#34;|<b> & "q"'),
    ],
)
def test_erb_tags(source, expected):
    assert render(source, x='<b> & "q"', m=Markup("<i>m</i>"), obj=Html(), n=5) == expected


@pytest.mark.parametrize("default_filters", [["h"], ["str"], ["h", "str"], []])
def test_erb_escapes_exactly_once_whatever_the_default_filters(default_filters):
    template = Template(
        "<%= x %>|<%= m %>|<%- x %>", default_filters=default_filters, preprocessor=erb_preprocessor
    )
    assert template.render(x="<&>", m=Markup("<i>")) == "&lt;&amp;&gt;|<i>|<&>"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("<% y = x * 2 %><%= y %>", "6"),
        ("<%!\n  z = '<'\n%><%= z %>${z}", "&lt;&lt;"),
        ("% for i in range(2):\n<%= i %>\n% endfor\n", "0\n1\n"),
        ("## <%= not closed\nok", "ok"),
        ("<%doc> <%= not closed </%doc>ok", "ok"),
        ("<%text><%= x %> ${x}</%text>", "<%= x %> ${x}"),
        ('<%def name="f(a)">[<%= a %>]</%def>${f("<")}', "[&lt;]"),
        ("<%= x %>%>", "3%>"),
    ],
)
def test_mako_tags_keep_working(source, expected):
    assert render(source, x=3) == expected


def test_line_numbers_are_kept():
    source = '<%= "a" if x else\n"c" %>\n<%- (y,\n z) %>\n${broken(}'
    assert erb_preprocessor(source).count("\n") == source.count("\n")
    with pytest.raises(SyntaxException) as raised:
        Template(source, preprocessor=erb_preprocessor)
    assert raised.value.lineno == 5


@pytest.mark.parametrize(
    "source, lineno",
    [
        ("<%= x", 1),
        ("ok\n  <%- x", 2),
        ("<%= %>", 1),
        ("<%= x # a comment %>", 1),
        ("<%= x -%>", 1),
        ("<%= x y %>", 1),
    ],
)
def test_erb_tag_without_an_end(source, lineno):
    with pytest.raises(SyntaxException) as raised:
        erb_preprocessor(source)
    assert raised.value.lineno == lineno


# -- the source element in templates ------------------------------------------


def test_source_element_is_not_escaped_again(bound):
    bound(make_environ("https://example.com/"))
    template = Template(
        "${turbo_stream_source(None, 'a', 'b')}|<%= rwf_turbo_stream() %>",
        default_filters=["h"],
        preprocessor=erb_preprocessor,
    )
    first, second = template.render(turbo_stream_source=turbo_stream_source, rwf_turbo_stream=rwf_turbo_stream).split("|")
    assert src_of(first).startswith("wss://example.com/turbo-stream?stream=")
    assert src_of(second) == "wss://example.com/turbo-stream"


# -- template_lookup -------------------------------------------------------------


@pytest.fixture
def templates(tmp_path):
    (tmp_path / "base.html").write_text("<html>${next.body()}</html>", encoding="utf-8")
    (tmp_path / "room.html").write_text(
        '<%inherit file="base.html"/>\n'
        "<h1><%= name %></h1>${name}\n"
        "${turbo_stream_source(None, room)}\n"
        "<%- rwf_turbo_stream() %>\n"
        "<div><%- streams.append('m', '<p>hi</p>') %>${streams.remove('x')}</div>\n"
        "café",
        encoding="utf-8",
    )
    return tmp_path


def test_template_lookup_end_to_end(templates, bound):
    middleware = FakeMiddleware(viewer="u1")
    bound(make_environ("https://example.com/", middleware=middleware))
    lookup = template_lookup(templates, imports=["from turbo_gevent import streams"])
    page = lookup.get_template("room.html").render(name="<Ann>", room="room:1")
    lines = page.split("\n")
    assert lines[0] == "<html>"
    assert lines[1] == "<h1>&lt;Ann&gt;</h1>&lt;Ann&gt;"
    token = parse_qs(urlsplit(src_of(lines[2])).query)["stream"][0]
    assert middleware.signer.unsign(token, "u1") == "room:1"
    assert src_of(lines[3]) == "wss://example.com/turbo-stream"
    assert lines[4] == f"<div>{streams.append('m', '<p>hi</p>')}{streams.remove('x')}</div>"
    assert lines[5] == "café</html>"


def test_template_lookup_options(templates, bound):
    bound(make_environ())
    seen = []

    def mine(text):
        seen.append(text)
        return text.replace("café", "tea")

    lookup = template_lookup(
        [str(templates)],
        preprocessor=mine,
        default_filters=["str"],
        imports=["from turbo_gevent import streams"],
    )
    page = lookup.get_template("room.html").render(name="<Ann>", room="r")
    # The user's preprocessor sees plain Mako, and the user's filters win.
    assert "<%=" not in seen[0] and "${( name ) | n, h}" in seen[0]
    assert "<h1>&lt;Ann&gt;</h1><Ann>" in page
    assert page.endswith("tea</html>")


def test_template_lookup_defaults(templates):
    lookup = template_lookup(templates)
    assert lookup.template_args["default_filters"] == ["h"]
    assert lookup.template_args["input_encoding"] == "utf-8"
    assert lookup.template_args["preprocessor"] == [erb_preprocessor]
    assert lookup.directories == [str(templates)]


def test_template_lookup_user_imports_may_shadow(tmp_path):
    (tmp_path / "t.html").write_text("${turbo_stream_source()}")
    lookup = template_lookup(tmp_path, imports=["from builtins import str as turbo_stream_source"])
    assert lookup.get_template("t.html").render() == ""
