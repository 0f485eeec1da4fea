import pytest
from markupsafe import Markup

from turbo_gevent import streams


class Html:
    """Not a str, but HTML all the same: what template engines return."""

    def __init__(self, text):
        self.text = text

    def __html__(self):
        return self.text


@pytest.mark.parametrize(
    "built, expected",
    [
        (
            streams.append("messages", "<p>hi</p>"),
            '<turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>',
        ),
        (
            streams.prepend("messages", "<p>hi</p>"),
            '<turbo-stream action="prepend" target="messages"><template><p>hi</p></template></turbo-stream>',
        ),
        (
            streams.replace("m1", "<p>new</p>"),
            '<turbo-stream action="replace" target="m1"><template><p>new</p></template></turbo-stream>',
        ),
        (
            streams.update("m1", "<b>x</b>"),
            '<turbo-stream action="update" target="m1"><template><b>x</b></template></turbo-stream>',
        ),
        (
            streams.before("m1", "<hr>"),
            '<turbo-stream action="before" target="m1"><template><hr></template></turbo-stream>',
        ),
        (
            streams.after("m1", "<hr>"),
            '<turbo-stream action="after" target="m1"><template><hr></template></turbo-stream>',
        ),
        (streams.remove("x"), '<turbo-stream action="remove" target="x"></turbo-stream>'),
        (streams.append("empty"), '<turbo-stream action="append" target="empty"><template></template></turbo-stream>'),
        (
            streams.append(targets=".list li", html="<i>a</i>"),
            '<turbo-stream action="append" targets=".list li"><template><i>a</i></template></turbo-stream>',
        ),
        (streams.remove(targets=".notice"), '<turbo-stream action="remove" targets=".notice"></turbo-stream>'),
        (
            streams.replace("m1", "<p>x</p>", method="morph"),
            '<turbo-stream action="replace" target="m1" method="morph"><template><p>x</p></template></turbo-stream>',
        ),
        (
            streams.update(targets=".c", html="y", method="morph"),
            '<turbo-stream action="update" targets=".c" method="morph"><template>y</template></turbo-stream>',
        ),
        (streams.refresh(), '<turbo-stream action="refresh"></turbo-stream>'),
        (
            streams.refresh(request_id="abc-123", method="morph", scroll="preserve"),
            '<turbo-stream action="refresh" request-id="abc-123" method="morph" scroll="preserve"></turbo-stream>',
        ),
        (
            streams.refresh(method="replace", scroll="reset"),
            '<turbo-stream action="refresh" method="replace" scroll="reset"></turbo-stream>',
        ),
    ],
)
def test_exact_output(built, expected):
    assert built == expected
    assert isinstance(built, Markup)


@pytest.mark.parametrize(
    "built, expected",
    [
        (streams.action("log"), '<turbo-stream action="log"><template></template></turbo-stream>'),
        (
            streams.action("set_title", html="New <b>title</b>"),
            '<turbo-stream action="set_title"><template>New <b>title</b></template></turbo-stream>',
        ),
        (
            streams.action("toast", "flash", "<p>ok</p>", level="info", data_timeout=5),
            '<turbo-stream action="toast" target="flash" level="info" data-timeout="5">'
            "<template><p>ok</p></template></turbo-stream>",
        ),
        (
            streams.action("highlight", targets=".row", color=None, pulse=True, fade=False),
            '<turbo-stream action="highlight" targets=".row" pulse=""><template></template></turbo-stream>',
        ),
        (
            streams.action("redirect-to", url="/a?b=1&c=2"),
            '<turbo-stream action="redirect-to" url="/a?b=1&amp;c=2"><template></template></turbo-stream>',
        ),
        (streams.action("remove", "x"), '<turbo-stream action="remove" target="x"></turbo-stream>'),
    ],
)
def test_custom_action(built, expected):
    assert built == expected
    assert isinstance(built, Markup)


def test_custom_attributes_keep_the_given_order():
    built = streams.action("a", z="1", a="2", m_n="3")
    assert built.startswith('<turbo-stream action="a" z="1" a="2" m-n="3">')


@pytest.mark.parametrize(
    "build",
    [
        lambda v: streams.append(v, "x"),
        lambda v: streams.remove(v),
        lambda v: streams.update(targets=v, html="x"),
        lambda v: streams.refresh(request_id=v),
        lambda v: streams.action("custom", v, extra=v),
    ],
)
def test_attribute_values_are_escaped(build):
    built = build('a"b<')
    assert 'a"b<' not in built
    assert "a&#34;b&lt;" in built


def test_markup_attribute_value_is_still_escaped():
    # An attribute value is text, whatever its type claims.
    assert 'target="a&#34;b&amp;amp;"' in streams.remove(Markup('a"b&amp;'))


@pytest.mark.parametrize("html", ['<p class="x">a & b</p>', Markup("<p>a &amp; b</p>"), "<script>1 < 2</script>"])
def test_html_is_left_unchanged(html):
    assert f"<template>{html}</template>" in streams.append("t", html)


@pytest.mark.parametrize("build", [streams.append, streams.replace, lambda t, h: streams.action("x", t, h)])
def test_html_objects_are_accepted(build):
    assert "<template><em>hi</em></template>" in build("t", Html("<em>hi</em>"))


def test_builders_are_safe_under_escaping():
    built = streams.append("t", "<p>")
    assert Markup("{}").format(built) == built


@pytest.mark.parametrize(
    "call",
    [
        lambda: streams.append(),
        lambda: streams.append(html="<p>"),
        lambda: streams.remove(),
        lambda: streams.replace("a", "x", targets=".a"),
        lambda: streams.remove("a", targets=".a"),
        lambda: streams.action("x", "a", targets=".a"),
        lambda: streams.append("", "x"),
        lambda: streams.append(targets="", html="x"),
        lambda: streams.action("x", ""),
        lambda: streams.replace("a", "x", method="replace"),
        lambda: streams.update("a", "x", method="MORPH"),
        lambda: streams.refresh(method="reload"),
        lambda: streams.refresh(scroll="keep"),
        lambda: streams.refresh(request_id=""),
        lambda: streams.action(""),
        lambda: streams.action("bad name"),
        lambda: streams.action('x"><script>'),
        lambda: streams.action(None),
        lambda: streams.action("x", **{"a b": "1"}),
        lambda: streams.action("x", action="y"),
        lambda: streams.action("remove", "a", "<p>"),
    ],
)
def test_value_errors(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: streams.append("t", None),
        lambda: streams.append("t", 42),
        lambda: streams.append("t", b"<p>"),
        lambda: streams.action("x", html=object()),
        lambda: streams.append(5, "x"),
        lambda: streams.refresh(request_id=1),
    ],
)
def test_type_errors(call):
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("build", [streams.append, streams.prepend, streams.before, streams.after])
def test_method_only_on_replace_and_update(build):
    with pytest.raises(TypeError):
        build("t", "x", method="morph")


def test_all_lists_the_builders():
    public = {n for n, v in vars(streams).items() if callable(v) and getattr(v, "__module__", "") == streams.__name__}
    assert set(streams.__all__) == {n for n in public if not n.startswith("_")}


@pytest.mark.parametrize("attribute", ["onfocus", "onclick", "ON_load", "onerror"])
def test_event_handler_attributes_are_refused(attribute):
    with pytest.raises(ValueError, match="event handler"):
        streams.action("custom", "x", **{attribute: "alert(1)"})
