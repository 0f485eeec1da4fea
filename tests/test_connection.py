"""Connection internals over a real socket pair, in this process under gevent.

The peer never reads, so the kernel's buffers fill and a backlog builds:
what the single writer then does with control frames is checked directly.
"""

import gevent
import gevent.socket
import pytest
from websockets.frames import Frame, Opcode

from turbo_gevent.connection import Connection, ConnectionSettings


def text_frame(size):
    return Frame(Opcode.TEXT, b"x" * size).serialize(mask=False)


@pytest.fixture
def backlogged():
    """A connection whose peer reads nothing, with data frames queued."""
    server_side, peer = gevent.socket.socketpair()
    connection = Connection(settings=ConnectionSettings(ping_interval=1.0, ping_timeout=60.0, max_queue=1000))
    reader = gevent.spawn(connection.run, server_side)
    gevent.sleep(0)
    while connection._writer is None:  # fill the kernel's buffers, then the queue
        connection.send_frame(text_frame(65536))
    for _ in range(3):
        connection.send_frame(text_frame(1000))
    yield connection
    connection._abort("test over")
    reader.join(5)
    peer.close()


def opcodes(connection):
    return [frame[0] & 0x0F for frame in connection._queue]


def test_a_ping_goes_ahead_of_queued_data(backlogged):
    backlogged.keepalive(backlogged._ping_due)
    assert opcodes(backlogged)[0] == 0x9
    assert opcodes(backlogged)[1:] == [0x1] * (len(backlogged._queue) - 1)


def test_a_newer_pong_replaces_one_not_yet_sent(backlogged):
    backlogged._send_control(Frame(Opcode.PONG, b"1").serialize(mask=False))
    backlogged._send_control(Frame(Opcode.PONG, b"2").serialize(mask=False))
    assert opcodes(backlogged).count(0xA) == 1
    assert backlogged._queue[0].endswith(b"2")


def test_a_close_waits_behind_queued_data_and_stops_further_data(backlogged):
    queued = len(backlogged._queue)
    backlogged.close(1001, "bye")
    assert opcodes(backlogged)[-1] == 0x8
    backlogged.send_frame(text_frame(10))  # after a close frame: dropped (RFC 6455 5.5.1)
    assert len(backlogged._queue) == queued + 1


def test_a_full_queue_drops_the_connection_as_slow():
    server_side, peer = gevent.socket.socketpair()
    dropped = []
    connection = Connection(
        settings=ConnectionSettings(max_queue=5), on_close=lambda c, slow: dropped.append(slow)
    )
    reader = gevent.spawn(connection.run, server_side)
    gevent.sleep(0)
    for _ in range(1000):
        connection.send_frame(text_frame(65536))
        if dropped:
            break
    assert dropped == [True]
    assert connection.closed
    reader.join(5)
    peer.close()


def test_send_is_one_text_frame_to_this_connection():
    server_side, peer = gevent.socket.socketpair()
    connection = Connection(settings=ConnectionSettings())
    reader = gevent.spawn(connection.run, server_side)
    gevent.sleep(0)
    connection.send("héllo")
    assert peer.recv(100) == b"\x81\x06h\xc3\xa9llo"
    connection._abort("test over")
    reader.join(5)
    peer.close()
