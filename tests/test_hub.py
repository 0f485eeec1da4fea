"""Hub bookkeeping, without sockets: fake subscribers record the frames."""

import pytest
from websockets.frames import Frame

from turbo_gevent import Hub, streams
from turbo_gevent.hub import encode_text_frame, join_fragments


class Recorder:
    def __init__(self, streams=(), user_id=None):
        self.streams = tuple(streams)
        self.user_id = user_id
        self.frames = []

    def send_frame(self, frame):
        self.frames.append(frame)

    @property
    def messages(self):
        return [decode(frame) for frame in self.frames]


def decode(frame):
    def read_exact(n):
        nonlocal frame
        chunk, frame = frame[:n], frame[n:]
        yield from ()
        return chunk

    gen = Frame.parse(read_exact, mask=False)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value.data.decode()


def test_broadcast_reaches_only_the_stream_subscribers():
    hub = Hub()
    a, b, both = Recorder(["a"]), Recorder(["b"]), Recorder(["a", "b"])
    for connection in (a, b, both):
        hub.add(connection)
    hub.broadcast("a", "<p>A</p>")
    assert a.messages == ["<p>A</p>"]
    assert b.messages == []
    assert both.messages == ["<p>A</p>"]


def test_broadcast_all_reaches_every_connection():
    hub = Hub()
    connections = [Recorder(["a"]), Recorder(), Recorder(user_id="7")]
    for connection in connections:
        hub.add(connection)
    hub.broadcast_all(streams.refresh())
    assert all(c.messages == ['<turbo-stream action="refresh"></turbo-stream>'] for c in connections)


def test_several_fragments_are_one_message_joined_with_nothing():
    hub = Hub()
    listener = Recorder(["s"])
    hub.add(listener)
    hub.broadcast("s", streams.append("m", "<p>1</p>"), streams.remove("x"))
    assert listener.messages == [
        '<turbo-stream action="append" target="m"><template><p>1</p></template></turbo-stream>'
        '<turbo-stream action="remove" target="x"></turbo-stream>'
    ]


def test_the_frame_is_encoded_once_and_shared():
    hub = Hub()
    listeners = [Recorder(["s"]) for _ in range(3)]
    for listener in listeners:
        hub.add(listener)
    hub.broadcast("s", "<p>x</p>")
    first = listeners[0].frames[0]
    assert all(listener.frames[0] is first for listener in listeners)


def test_order_is_kept_per_stream():
    hub = Hub()
    listener = Recorder(["s"])
    hub.add(listener)
    for i in range(100):
        hub.broadcast("s", f"<p>{i}</p>")
    assert listener.messages == [f"<p>{i}</p>" for i in range(100)]


def test_user_stream_reaches_all_tabs_of_that_user_only():
    hub = Hub()
    tab1, tab2, other, anonymous = Recorder(user_id="alice"), Recorder(user_id="alice"), Recorder(user_id="bob"), Recorder()
    for connection in (tab1, tab2, other, anonymous):
        hub.add(connection)
    hub.broadcast_to_user("alice", "<p>note</p>")
    assert tab1.messages == tab2.messages == ["<p>note</p>"]
    assert other.messages == anonymous.messages == []
    hub.broadcast_to_user("nobody", "<p>x</p>")  # no open page: not an error
    assert hub.user_connection_count("alice") == 2


def test_a_user_stream_is_not_a_named_stream():
    hub = Hub()
    named = Recorder(["alice"])
    hub.add(named)
    hub.broadcast_to_user("alice", "<p>x</p>")
    assert named.messages == []


def test_discard_stops_delivery_and_counts_slow_drops():
    hub = Hub()
    gone, slow, stays = Recorder(["s"]), Recorder(["s"]), Recorder(["s"])
    for connection in (gone, slow, stays):
        hub.add(connection)
    hub.discard(gone)
    hub.discard(slow, slow=True)
    hub.discard(slow, slow=True)  # twice is harmless and counted once
    hub.broadcast("s", "<p>x</p>")
    assert gone.frames == slow.frames == []
    assert stays.messages == ["<p>x</p>"]
    stats = hub.stats()
    assert stats["connections"] == 1
    assert stats["dropped_slow"] == 1
    assert stats["messages_sent"] == 1
    assert stats["connections_total"] == 3


def test_a_connection_dropped_during_fan_out_does_not_disturb_it():
    hub = Hub()
    received = []

    class DropsSelf(Recorder):
        def send_frame(self, frame):
            hub.discard(self, slow=True)

    for connection in (Recorder(["s"]), DropsSelf(["s"]), Recorder(["s"])):
        hub.add(connection)
        received.append(connection)
    hub.broadcast("s", "<p>x</p>")
    assert [len(c.frames) for c in received] == [1, 0, 1]


def test_unknown_streams_leave_no_state_behind():
    hub = Hub()
    for i in range(1000):
        hub.broadcast(f"nobody-{i}", "<p>x</p>")
        hub.broadcast_to_user(i, "<p>x</p>")
    assert hub._snapshots == {}


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda hub: hub.broadcast("s"), ValueError),
        (lambda hub: hub.broadcast("", "<p></p>"), ValueError),
        (lambda hub: hub.broadcast("s", 42), TypeError),
        (lambda hub: hub.broadcast_all(), ValueError),
        (lambda hub: hub.broadcast_to_user(None, "<p></p>"), ValueError),
    ],
)
def test_bad_arguments_raise_at_the_call(call, error):
    with pytest.raises(error):
        call(Hub())


def test_join_fragments_accepts_html_objects():
    class Html:
        def __html__(self):
            return "<b>x</b>"

    assert join_fragments(["<i>", Html(), streams.remove("a")]) == (
        '<i><b>x</b><turbo-stream action="remove" target="a"></turbo-stream>'
    )


def test_encode_text_frame_is_a_valid_unmasked_text_frame():
    assert encode_text_frame("hé")[:2] == b"\x81\x03"
    assert decode(encode_text_frame("x" * 70000)) == "x" * 70000


class CountingBroker:
    def __init__(self):
        self.starts = 0
        self.published = []

    def start(self, deliver, on_reconnect):
        self.starts += 1
        self.deliver, self.on_reconnect = deliver, on_reconnect

    def publish(self, kind, key, message):
        self.published.append((kind, key, message))
        self.deliver(kind, key, message)


def test_broker_starts_once_per_process_and_again_after_a_fork():
    broker = CountingBroker()
    hub = Hub(broker=broker)
    listener = Recorder(["s"])
    hub.add(listener)
    hub.broadcast("s", "<p>1</p>")
    assert broker.starts == 1
    assert broker.published == [("stream", "s", "<p>1</p>")]
    assert listener.messages == ["<p>1</p>"]
    hub._broker_pid = -1  # as a forked child sees it: started, but by another process
    hub.broadcast("s", "<p>2</p>")
    assert broker.starts == 2


def test_broker_reconnect_sends_every_page_a_refresh_unless_disabled():
    for enabled, expected in ((True, ['<turbo-stream action="refresh"></turbo-stream>']), (False, [])):
        broker = CountingBroker()
        hub = Hub(broker=broker, refresh_on_reconnect=enabled)
        listener = Recorder(["s"])
        hub.add(listener)
        broker.on_reconnect()
        assert listener.messages == expected


def test_text_that_cannot_be_sent_is_refused_whoever_listens():
    lone_surrogate = "<p>\ud800</p>"
    for listeners in ((), (Recorder(["s"]),)):
        hub = Hub()
        for listener in listeners:
            hub.add(listener)
        with pytest.raises(ValueError, match="not valid text"):
            hub.broadcast("s", lone_surrogate)


def test_recipients_are_reached_in_the_order_they_connected():
    hub, reached = Hub(), []

    class InOrder(Recorder):
        def send_frame(self, frame):
            reached.append(self.name)

    for name in range(50):
        connection = InOrder(["s"])
        connection.name = name
        hub.add(connection)
    hub.broadcast("s", "<p>x</p>")
    assert reached == list(range(50))
