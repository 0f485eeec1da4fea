"""Build ``<turbo-stream>`` elements: the messages a page applies to itself.

Each builder returns :class:`markupsafe.Markup`, ready to send over a stream
or to put in a ``text/vnd.turbo-stream.html`` response, and safe to print in
a template under the ``h`` filter without being escaped again::

    from turbo_gevent import streams

    streams.append("messages", "<p>hi</p>")
    # <turbo-stream action="append" target="messages"><template><p>hi</p></template></turbo-stream>
    streams.remove(targets=".notice")
    # <turbo-stream action="remove" targets=".notice"></turbo-stream>
    streams.replace("card_1", html, method="morph")
    streams.refresh(request_id="abc", method="morph", scroll="preserve")
    streams.action("log", message="saved")  # a custom action

``target`` is an element id and ``targets`` a CSS selector; the standard
actions need exactly one of them. The content is HTML and goes into the
``<template>`` unchanged, so escape user data when rendering it (a Mako
template with ``default_filters=["h"]`` does). Attribute values are always
escaped. Anything Turbo would reject raises ``ValueError`` (or ``TypeError``
for content that is not HTML) here, where the mistake is, rather than in
the browser.

The builders do no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

__all__ = [
    "action",
    "after",
    "append",
    "before",
    "prepend",
    "refresh",
    "remove",
    "replace",
    "update",
]

# Allowed values of the attributes Turbo reads as enumerations.
_METHODS = ("morph",)  # replace and update
_REFRESH_METHODS = ("morph", "replace")
_REFRESH_SCROLLS = ("preserve", "reset")

# Actions whose element carries no <template>: they have no content.
_NO_TEMPLATE = ("remove", "refresh")

_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")


def _html(content: Any) -> str:
    if isinstance(content, str):
        return content
    if hasattr(content, "__html__"):
        return content.__html__()
    raise TypeError(
        f"stream content must be an HTML str or have __html__, not {type(content).__name__}"
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> str | None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


def _element(name: str, attributes: dict[str, Any], html: Any = "") -> Markup:
    """The element for action ``name``; ``None`` and ``False`` omit an attribute."""
    parts = [f'<turbo-stream action="{escape(name)}"']
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        # Always text: even a Markup value is escaped, as it is no markup here.
        parts.append(f' {key}="{"" if value is True else escape(str(value))}"')
    parts.append(">")
    if name not in _NO_TEMPLATE:
        parts.append(f"<template>{_html(html)}</template>")
    elif html != "":
        raise ValueError(f"the {name} action takes no content")
    parts.append("</turbo-stream>")
    return Markup("".join(parts))


def _targeting(target: str | None, targets: str | None, *, required: bool) -> dict[str, str]:
    if target is not None and targets is not None:
        raise ValueError("give target (an element id) or targets (a CSS selector), not both")
    if target is not None:
        return {"target": _text(target, "target")}
    if targets is not None:
        return {"targets": _text(targets, "targets")}
    if required:
        raise ValueError("give target (an element id) or targets (a CSS selector)")
    return {}


def _standard(name: str, target: str | None, targets: str | None, html: Any = "", **extra: Any) -> Markup:
    return _element(name, {**_targeting(target, targets, required=True), **extra}, html)


def append(target: str | None = None, html: Any = "", *, targets: str | None = None) -> Markup:
    """Add ``html`` at the end of the target's children."""
    return _standard("append", target, targets, html)


def prepend(target: str | None = None, html: Any = "", *, targets: str | None = None) -> Markup:
    """Add ``html`` at the start of the target's children."""
    return _standard("prepend", target, targets, html)


def before(target: str | None = None, html: Any = "", *, targets: str | None = None) -> Markup:
    """Insert ``html`` just before the target, as a sibling."""
    return _standard("before", target, targets, html)


def after(target: str | None = None, html: Any = "", *, targets: str | None = None) -> Markup:
    """Insert ``html`` just after the target, as a sibling."""
    return _standard("after", target, targets, html)


def replace(
    target: str | None = None, html: Any = "", *, targets: str | None = None, method: str | None = None
) -> Markup:
    """Replace the target element itself; ``method="morph"`` keeps unchanged DOM state."""
    return _standard("replace", target, targets, html, method=_choice(method, _METHODS, "method"))


def update(
    target: str | None = None, html: Any = "", *, targets: str | None = None, method: str | None = None
) -> Markup:
    """Replace the target's children; ``method="morph"`` keeps unchanged DOM state."""
    return _standard("update", target, targets, html, method=_choice(method, _METHODS, "method"))


def remove(target: str | None = None, *, targets: str | None = None) -> Markup:
    """Remove the target element."""
    return _standard("remove", target, targets)


def refresh(
    *, request_id: str | None = None, method: str | None = None, scroll: str | None = None
) -> Markup:
    """Ask the page to reload itself (Turbo 8), e.g. after a broadcast change.

    Arguments:
        request_id: Turbo skips the refresh on the page whose own request
            caused it (the ``X-Turbo-Request-Id`` header it sent).
        method: ``"morph"`` or ``"replace"``; the page's
            ``turbo-refresh-method`` meta tag otherwise.
        scroll: ``"preserve"`` or ``"reset"``; the page's
            ``turbo-refresh-scroll`` meta tag otherwise.

    Raises ``ValueError`` for an empty ``request_id`` or an unknown value.
    """
    return _element(
        "refresh",
        {
            "request-id": None if request_id is None else _text(request_id, "request_id"),
            "method": _choice(method, _REFRESH_METHODS, "method"),
            "scroll": _choice(scroll, _REFRESH_SCROLLS, "scroll"),
        },
    )


def action(
    name: str,
    target: str | None = None,
    html: Any = "",
    *,
    targets: str | None = None,
    **attributes: Any,
) -> Markup:
    """A stream element for any action, such as a custom one registered in JS.

    Arguments:
        name: the action, letters, digits, ``-`` and ``_``.
        target, targets: optional here: a custom action may need neither.
        html: the ``<template>`` content (omitted for remove and refresh).
        attributes: extra attributes in the given order; ``foo_bar=`` becomes
            ``foo-bar``; ``None`` or ``False`` omits one, ``True`` gives an
            empty value; other values are converted with ``str`` and escaped.

    Raises ``ValueError`` for a bad name or attribute name, or both targets.
    """
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise ValueError(f"an action name must be letters, digits, '-' or '_', not {name!r}")
    extra = {}
    for key, value in attributes.items():
        attribute = key.replace("_", "-")
        if not _TOKEN.match(attribute) or attribute in ("action", "target", "targets"):
            raise ValueError(f"{key!r} cannot be used as an attribute name")
        if attribute.lower().startswith("on"):  # an event handler would run script
            raise ValueError(f"{key!r}: event handler attributes are not allowed")
        extra[attribute] = value
    return _element(name, {**_targeting(target, targets, required=False), **extra}, html)
