"""TurboStreams as plain WSGI, through werkzeug.test.Client: no server at all."""

import logging
import threading

import pytest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client as _Client
from werkzeug.wrappers import Request, Response

from turbo_gevent import TurboStreams
from turbo_gevent.templating import turbo_stream_source


class Client(_Client):
    """Buffered, so every response iterable is closed as a server would."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}


@Request.application
def legacy(request):
    if request.path == "/page":
        return Response(str(turbo_stream_source("/turbo-stream", "chat")), mimetype="text/html")
    return Response(f"app saw {request.script_root}|{request.path}")


def make(**options):
    options.setdefault("secret", "s3cret")
    return TurboStreams(legacy, **options)


def test_other_paths_go_to_the_app_untouched():
    response = Client(make()).get("/elsewhere/turbo-stream", query_string="a=1")
    assert response.status_code == 200
    assert response.text == "app saw |/elsewhere/turbo-stream"


def test_stream_path_under_script_name():
    middleware = make()
    response = Client(middleware).get("/turbo-stream", environ_overrides={"SCRIPT_NAME": "/mounted"})
    assert response.status_code == 426  # the stream path, under the mount point
    response = Client(middleware).get("/mounted/turbo-stream")
    assert response.status_code == 200  # without SCRIPT_NAME it is just another path


@pytest.mark.parametrize(
    "headers, overrides, status",
    [
        ({}, {}, 426),
        (UPGRADE, {"SERVER_PROTOCOL": "HTTP/1.0"}, 400),
        ({**UPGRADE, "Sec-WebSocket-Version": "8"}, {}, 426),
        ({**UPGRADE, "Sec-WebSocket-Key": "abc"}, {}, 400),
        (UPGRADE, {}, 500),  # a valid upgrade, but no handler that can switch protocols
    ],
)
def test_refusals_are_complete_plain_responses(headers, overrides, status):
    response = Client(make()).get("/turbo-stream", headers=headers, environ_overrides=overrides)
    assert response.status_code == status
    assert response.mimetype == "text/plain"
    assert int(response.headers["Content-Length"]) == len(response.data) > 0
    assert b"Traceback" not in response.data


def test_forged_token_is_403_before_any_upgrade():
    forged = TurboStreams(legacy, secret="other").signer.sign("chat")
    response = Client(make()).get("/turbo-stream", query_string={"stream": forged}, headers=UPGRADE)
    assert response.status_code == 403
    assert "signature" in response.text


def test_post_is_refused_before_the_tokens_are_looked_at():
    response = Client(make()).post("/turbo-stream", query_string={"stream": "forged"}, headers=UPGRADE)
    assert response.status_code == 400


def test_no_secret_warns_and_still_works(caplog):
    with caplog.at_level(logging.WARNING, logger="turbo_gevent.middleware"):
        middleware = TurboStreams(legacy)
    assert "every other process" in caplog.text
    token = middleware.signer.sign("chat")
    assert middleware.signer.unsign(token) == "chat"


def test_template_function_knows_the_current_request():
    middleware = make()
    html = Client(middleware).get("/page", base_url="https://example.com").text
    assert html.startswith('<turbo-stream-source src="wss://example.com/turbo-stream?stream=')
    token = html.split("stream=")[1].split('"')[0]
    assert middleware.signer.unsign(token) == "chat"


def test_proxy_fix_in_front_is_honoured():
    app = ProxyFix(make(), x_proto=1, x_host=1)
    html = Client(app).get("/page", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}).text
    assert 'src="wss://public.example/turbo-stream?' in html


def test_untrusted_host_in_a_template_is_400():
    app = make(trusted_hosts=["good.example"])
    assert Client(app).get("/page", base_url="http://good.example").status_code == 200
    response = Client(app).get("/page", base_url="http://evil.example")
    assert response.status_code == 400  # the app's own handling of werkzeug's SecurityError


def test_untrusted_host_reaching_the_middleware_is_a_plain_400():
    def bare(environ, start_response):  # a legacy app that lets exceptions out
        body = str(turbo_stream_source()).encode()
        start_response("200 OK", [("Content-Type", "text/html")])
        return [body]

    app = TurboStreams(bare, secret="s", trusted_hosts=["good.example"])
    response = Client(app).get("/page", base_url="http://evil.example")
    assert response.status_code == 400
    assert response.mimetype == "text/plain"
    assert Client(app).get("/page", base_url="http://good.example").text == (
        '<turbo-stream-source src="ws://good.example/turbo-stream"></turbo-stream-source>'
    )


def test_outside_a_request_is_a_clear_runtime_error():
    errors = []

    def render():  # a fresh thread: no request bound by any earlier test
        try:
            turbo_stream_source("/turbo-stream")
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=render)
    thread.start()
    thread.join()
    assert errors and "TurboStreams" in errors[0]


def test_the_request_is_unbound_when_the_response_is_closed():
    seen = []

    def render():
        response = Client(make()).get("/x")
        response.close()
        try:
            turbo_stream_source()
        except RuntimeError:
            seen.append("unbound")

    thread = threading.Thread(target=render)
    thread.start()
    thread.join()
    assert seen == ["unbound"]


def test_viewer_is_identify_as_str_and_called_once():
    calls = []

    def identify(environ):
        calls.append(1)
        return 42

    middleware = make(identify=identify)
    environ = {}
    assert middleware.viewer(environ) == "42"
    assert middleware.viewer(environ) == "42"
    assert calls == [1]


@pytest.mark.parametrize(
    "options, error",
    [
        ({"path": "turbo"}, ValueError),
        ({"identify": "nope"}, TypeError),
        ({"max_connections": 0}, ValueError),
        ({"max_queue": 0}, ValueError),
        ({"send_timeout": -1}, ValueError),
        ({"secret": ""}, ValueError),
        ({"secret": []}, ValueError),
        ({"token_max_age": 0}, ValueError),
    ],
)
def test_bad_settings_fail_at_construction(options, error):
    with pytest.raises(error):
        make(**options)


@pytest.mark.parametrize("headers", [{}, {**UPGRADE, "Sec-WebSocket-Version": "8"}])
def test_426_names_the_upgrade_it_needs_and_ends_the_connection(headers):
    response = Client(make()).get("/turbo-stream", headers=headers)
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert response.headers["Connection"] == "Upgrade, close"
