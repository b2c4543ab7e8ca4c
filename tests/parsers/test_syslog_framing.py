"""parsers.syslog.StreamFramer: RFC 6587 octet counting and newline framing on a TCP stream."""

from __future__ import annotations

import pytest

from parsers.syslog import MAX_FRAME, StreamFramer
from shadowtap.errors import ParseError

MESSAGES = [b"<134>Nov 27 20:42:00 haproxy[1]: first", b"<134>second with spaces", b"<134>third\xc3\xa9"]


def octets(message: bytes) -> bytes:
    return b"%d " % len(message) + message


@pytest.mark.parametrize("frame", [octets, lambda m: m + b"\n", lambda m: m + b"\r\n"])
def test_any_split_of_the_stream_gives_the_same_messages(frame):
    stream = b"".join(frame(m) for m in MESSAGES)
    for cut in range(1, len(stream)):
        framer = StreamFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == MESSAGES, cut
        assert framer.rest() == b""


def test_framings_may_alternate_and_a_partial_message_is_kept():
    framer = StreamFramer()
    assert framer.feed(octets(b"<1>a") + b"<2>b\n" + octets(b"<3>c\nd") + b"<4>unfinished") == [
        b"<1>a", b"<2>b", b"<3>c\nd"]
    assert framer.rest() == b"<4>unfinished"


def test_digits_without_a_space_are_a_newline_framed_message():
    # A raw HAProxy line starts with the client address: not an octet count.
    framer = StreamFramer()
    assert framer.feed(b"127.0.0.1:5 [x] GET\n") == [b"127.0.0.1:5 [x] GET"]


def test_an_octet_count_above_the_maximum_breaks_the_stream():
    framer = StreamFramer()
    assert framer.feed(b"<1>before\n%d x" % (MAX_FRAME + 1)) == [b"<1>before"]
    assert isinstance(framer.broken, ParseError) and framer.broken.reason == "bad_frame"
    assert framer.rest() == b"%d x" % (MAX_FRAME + 1)
    assert framer.feed(b"<2>after\n") == []


def test_a_newline_message_longer_than_the_maximum_is_cut():
    framer = StreamFramer()
    got = framer.feed(b"<1>" + b"x" * MAX_FRAME)
    assert len(got) == 1 and len(got[0]) == MAX_FRAME + 3
