"""Who may listen, over real sockets: Origin, users, bound and expiring tokens,
authorize, connection limits."""


import pytest

from tests.support.rawws import RawClient
from tests.support.server import TEST_SECRET, wait_for
from turbo_gevent.tokens import InvalidToken, StreamSigner

signer = StreamSigner(TEST_SECRET)


_SAME = object()


def connect(server, *streams, user=None, origin=None, token_for=_SAME, signer_=signer):
    """Open a stream connection; tokens are bound to ``token_for`` (default: ``user``)."""
    viewer = user if token_for is _SAME else token_for
    query = "&".join("stream=" + signer_.sign(s, viewer) for s in streams)
    extra = []
    if user is not None:
        extra.append(("X-User", user))
    if origin is not None:
        extra.append(("Origin", origin))
    return RawClient(server.port, query=query, extra=extra)


def assert_refused(client, status):
    assert client.status == status
    assert int(client.headers["content-length"]) == len(client.buffer) > 0
    assert client.headers["content-type"].startswith("text/plain")
    assert TEST_SECRET.encode() not in client.buffer


@pytest.fixture
def users_server(make_server_process):
    return make_server_process({"identify": "header"})


def test_same_site_origin_accepted_cross_site_refused(server):
    own = connect(server, "chat", origin=f"http://127.0.0.1:{server.port}")
    assert own.status == 101
    evil = connect(server, "chat", origin="https://evil.example")
    assert_refused(evil, 403)
    other_port = connect(server, "chat", origin=f"http://127.0.0.1:{server.port + 1}")
    assert_refused(other_port, 403)
    no_origin = connect(server, "chat")  # a non-browser client
    assert no_origin.status == 101


def test_allowed_origins_and_require_origin(make_server_process):
    server = make_server_process({"allowed_origins": ["https://app.example"], "require_origin": True})
    assert connect(server, "chat", origin="https://app.example").status == 101
    assert_refused(connect(server, "chat", origin="https://evil.example"), 403)
    assert_refused(connect(server, "chat"), 403)


def test_untrusted_host_is_400(make_server_process):
    server = make_server_process({"trusted_hosts": ["good.example"]})
    client = RawClient(server.port, query="stream=" + signer.sign("chat"), extra=())
    assert_refused(client, 400)  # Host: 127.0.0.1:PORT is not trusted


def test_push_to_one_user_reaches_all_their_tabs_and_nobody_else(users_server):
    alice_tabs = [connect(users_server, "chat", user="alice") for _ in range(2)]
    bob = connect(users_server, "chat", user="bob")
    anonymous = connect(users_server, "chat")
    assert {c.status for c in (*alice_tabs, bob, anonymous)} == {101}
    users_server.wait_connections(4)
    assert users_server.broadcast_to_user("alice", "<p>private</p>") == (200, "ok")
    users_server.broadcast("chat", "<p>public</p>")
    for tab in alice_tabs:
        assert tab.recv_frame()[2] == b"<p>private</p>"
        assert tab.recv_frame()[2] == b"<p>public</p>"
    for other in (bob, anonymous):
        assert other.recv_frame()[2] == b"<p>public</p>"  # the private one never came first
    assert users_server.broadcast_to_user("carol", "<p>nobody home</p>") == (200, "ok")


def test_token_from_one_user_is_refused_for_another_and_for_anonymous(users_server):
    assert connect(users_server, "chat", user="alice").status == 101
    assert_refused(connect(users_server, "chat", user="bob", token_for="alice"), 403)
    assert_refused(connect(users_server, "chat", token_for="alice"), 403)


def test_anonymous_token_refused_once_logged_in(users_server):
    assert connect(users_server, "chat").status == 101
    assert_refused(connect(users_server, "chat", user="alice", token_for=None), 403)


def test_expired_token_is_refused(make_server_process):
    server = make_server_process({"token_max_age": 1})
    token = signer.sign("chat")
    assert RawClient(server.port, query="stream=" + token).status == 101
    # itsdangerous timestamps have one-second resolution: wait until this one is stale.
    wait_for(lambda: _expired(token, 1), timeout=5, message="the token to expire")
    assert_refused(RawClient(server.port, query="stream=" + token), 403)
    assert "expired" in server.stderr()


def _expired(token, max_age):
    try:
        StreamSigner(TEST_SECRET, max_age=max_age).unsign(token)
    except InvalidToken:
        return True
    return False


def test_rotated_secret_still_accepts_the_previous_key(make_server_process):
    server = make_server_process({"secret": ["new-secret", TEST_SECRET]})
    old_page = RawClient(server.port, query="stream=" + signer.sign("chat"))
    new_page = RawClient(server.port, query="stream=" + StreamSigner("new-secret").sign("chat"))
    assert old_page.status == new_page.status == 101
    assert_refused(RawClient(server.port, query="stream=" + StreamSigner("unknown").sign("chat")), 403)


def test_authorize_refusing_one_of_two_streams_refuses_the_connection(make_server_process):
    server = make_server_process({"authorize_deny": ["admin"]})
    assert connect(server, "chat").status == 101
    assert_refused(connect(server, "chat", "admin"), 403)
    log = server.stderr()
    assert "not authorized" in log
    assert signer.sign("admin") not in log  # the reason is logged, never the token


def test_connection_limits(make_server_process):
    server = make_server_process({"identify": "header", "max_connections": 3, "max_connections_per_user": 2})
    open_ = [connect(server, "chat", user="alice") for _ in range(2)]
    assert [c.status for c in open_] == [101, 101]
    third = connect(server, "chat", user="alice")
    assert_refused(third, 429)
    open_.append(connect(server, "chat", user="bob"))
    assert open_[-1].status == 101
    full = connect(server, "chat", user="carol")
    assert_refused(full, 503)
    assert full.headers["retry-after"].isdigit()
