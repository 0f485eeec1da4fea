"""The opening handshake decided on the environ alone, no server (RFC 6455 4.2)."""

import base64

import pytest
from werkzeug.test import EnvironBuilder

from turbo_gevent.handshake import (
    Refusal,
    accept_headers,
    check_handshake,
    is_upgrade_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example key of RFC 6455 1.3
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}


def environ(headers=UPGRADE, *, method="GET", protocol="HTTP/1.1", drop=(), **changes):
    """A request's environ: the valid upgrade above, with ``changes`` and without ``drop``."""
    headers = {**headers, **{name.replace("_", "-"): value for name, value in changes.items()}}
    for name in drop:
        del headers[name]
    env = EnvironBuilder(path="/turbo-stream", method=method, headers=headers).get_environ()
    env["SERVER_PROTOCOL"] = protocol
    return env


def test_a_valid_upgrade_passes():
    assert check_handshake(environ()) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Connection": "keep-alive, Upgrade"},  # Firefox
        {"Connection": "Upgrade, keep-alive"},
        {"Connection": "keep-alive,Upgrade"},
        {"Connection": "upgrade"},
        {"Connection": "UPGRADE"},
        {"Upgrade": "WebSocket"},
        {"Upgrade": "websocket, h2c"},
        {"Sec-WebSocket-Version": " 13 "},
        {"Sec-WebSocket-Key": f"  {KEY} "},
        {"Sec-WebSocket-Key": base64.b64encode(bytes(16)).decode()},
        {"Sec-WebSocket-Key": base64.b64encode(bytes(range(240, 256))).decode()},
    ],
    ids=repr,
)
def test_valid_variants_pass(headers):
    assert check_handshake(environ({**UPGRADE, **headers})) is None


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/0.9", "", "HTTP", "HTTP/x.y", "FTP/1.1", "HTTP/1"])
def test_anything_below_http_1_1_is_400(protocol):
    refusal = check_handshake(environ(protocol=protocol))
    assert isinstance(refusal, Refusal)
    assert refusal.status == 400


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "http/1.1", "HTTP/2.0"])
def test_http_1_1_and_later_pass(protocol):
    assert check_handshake(environ(protocol=protocol)) is None


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "OPTIONS", "get"])
def test_anything_but_get_is_400_with_allow(method):
    refusal = check_handshake(environ(method=method))
    assert refusal.status == 400
    assert ("Allow", "GET") in refusal.headers


@pytest.mark.parametrize(
    "drop, headers",
    [
        (("Upgrade", "Connection"), {}),
        (("Upgrade",), {}),
        (("Connection",), {}),
        ((), {"Connection": "keep-alive"}),
        ((), {"Connection": "Upgradefoo"}),
        ((), {"Connection": "Up grade"}),
        ((), {"Upgrade": "h2c"}),
        ((), {"Upgrade": "websocketx"}),
        ((), {"Upgrade": ""}),
    ],
    ids=repr,
)
def test_no_upgrade_tokens_is_426_naming_websocket(drop, headers):
    refusal = check_handshake(environ({**UPGRADE, **headers}, drop=drop))
    assert refusal.status == 426
    assert ("Upgrade", "websocket") in refusal.headers
    assert ("Sec-WebSocket-Version", "13") in refusal.headers


@pytest.mark.parametrize("version", [None, "", "8", "12", "14", "13, 8", "8, 13", "thirteen", "013"])
def test_other_versions_are_426_naming_13(version):
    if version is None:
        env = environ(drop=("Sec-WebSocket-Version",))
    else:
        env = environ(Sec_WebSocket_Version=version)
    refusal = check_handshake(env)
    assert refusal.status == 426
    assert ("Sec-WebSocket-Version", "13") in refusal.headers


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "abc",
        "YWJj",  # valid base64 of 3 bytes
        base64.b64encode(bytes(15)).decode(),
        base64.b64encode(bytes(17)).decode(),
        KEY[:-2],  # padding missing
        KEY.replace("Z", "*"),  # not base64
        "dGhlIHNhbXBsZSBub25jZQ==dGhl",
        "dGhlIHNhbXBs ZSBub25jZQ=",
        "d\u00e9hlIHNhbXBsZSBub25jZQ=",
    ],
    ids=repr,
)
def test_missing_or_malformed_key_is_400(key):
    env = environ(drop=("Sec-WebSocket-Key",)) if key is None else environ(Sec_WebSocket_Key=key)
    refusal = check_handshake(env)
    assert refusal.status == 400
    assert "Sec-WebSocket-Key" in refusal.reason


@pytest.mark.parametrize(
    "kwargs, status",
    [
        # HTTP version and method come before anything else
        ({"protocol": "HTTP/1.0", "drop": ("Upgrade", "Sec-WebSocket-Key")}, 400),
        ({"method": "POST", "drop": ("Connection",)}, 400),
        # upgrade tokens before the version
        ({"drop": ("Upgrade", "Sec-WebSocket-Version")}, 426),
        # the version before the key
        ({"drop": ("Sec-WebSocket-Version", "Sec-WebSocket-Key")}, 426),
        ({"Sec_WebSocket_Version": "8", "Sec_WebSocket_Key": "abc"}, 426),
    ],
    ids=repr,
)
def test_checks_run_in_order(kwargs, status):
    refusal = check_handshake(environ(**kwargs))
    assert refusal.status == status
    if status == 426 and "Upgrade" in kwargs.get("drop", ()):
        assert ("Upgrade", "websocket") in refusal.headers


def test_version_refusal_names_the_version_we_speak():
    refusal = check_handshake(environ(Sec_WebSocket_Version="8"))
    assert dict(refusal.headers)["Sec-WebSocket-Version"] == "13"
    assert refusal.reason


def test_refusals_are_frozen_and_have_a_reason():
    refusal = check_handshake(environ(Sec_WebSocket_Key="abc"))
    assert refusal.reason
    with pytest.raises(AttributeError):
        refusal.status = 200


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, True),
        ({"Connection": "keep-alive, Upgrade"}, True),
        ({"Upgrade": "WEBSOCKET"}, True),
        ({"Upgrade": "h2c"}, False),
        ({"Connection": "close"}, False),
    ],
    ids=repr,
)
def test_is_upgrade_request(headers, expected):
    assert is_upgrade_request(environ({**UPGRADE, **headers})) is expected


def test_is_upgrade_request_without_headers():
    assert is_upgrade_request(EnvironBuilder().get_environ()) is False


def test_accept_headers_answer_the_key():
    headers = dict(accept_headers(environ()))
    # RFC 6455 1.3: this key must be answered with this accept value.
    assert headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["Upgrade"].lower() == "websocket"
    assert headers["Connection"].lower() == "upgrade"


def test_accept_headers_ignore_whitespace_around_the_key():
    assert dict(accept_headers(environ(Sec_WebSocket_Key=f" {KEY}  ")))["Sec-WebSocket-Accept"] == (
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )
