"""parsers.http1: message framing (RFC 9112 6.3), chunked bodies, pairing, pipelining,
interim responses, upgrades, HTTP/1.0 and 0.9, body limits, gaps, and feeding in any chunking."""

from __future__ import annotations

import itertools
import random

import pytest

from parsers.http1 import MASK, HttpConnection


class Conversation:
    """Drives an HttpConnection as the TCP layer would: sequence numbers, ACKs, frames, times."""

    def __init__(self, max_body: int = 1 << 20, midstream: bool = False) -> None:
        self.exchanges = []
        self.drops = []
        self.conn = HttpConnection(lambda c, e: self.exchanges.append(e),
                                   lambda c, reason, text, frame, sample: self.drops.append(reason),
                                   max_body, midstream)
        self.seq = {"c": 1000, "s": 5000}
        self.frame = 0
        self.ts = 100.0

    def send(self, side: str, data: bytes, step: float = 0.001) -> None:
        other = "s" if side == "c" else "c"
        self.frame += 1
        self.ts += step
        reader = self.conn.client if side == "c" else self.conn.server
        reader.data(data, self.ts, self.frame, self.seq[side], self.seq[other])
        self.seq[side] = (self.seq[side] + len(data)) & MASK

    def gap(self, side: str, size: int) -> None:
        reader = self.conn.client if side == "c" else self.conn.server
        reader.gap(size, self.ts)
        self.seq[side] = (self.seq[side] + size) & MASK

    def end(self, cause: str = "fin") -> None:
        self.conn.client.end(self.ts, cause)
        self.conn.server.end(self.ts, cause)

    def summary(self):
        out = []
        for e in self.exchanges:
            r = e.response
            out.append((e.request.method, e.request.target, e.request.body,
                        None if r is None else r.status, None if r is None else r.body, e.problem))
        return out


def response(status: int = 200, body: bytes = b"", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


def test_content_length_request_and_response_with_headers_in_order_and_duplicates():
    c = Conversation()
    c.send("c", b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello")
    c.send("s", response(201, b"made", b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
    (e,) = c.exchanges
    assert e.request.headers == (("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("Content-Length", "5"))
    assert e.request.host == "h" and e.request.body == b"hello" and e.request.body_size == 5
    assert e.response.status == 201 and e.response.body == b"made"
    assert [v for n, v in e.response.headers if n == "Set-Cookie"] == ["a=1", "b=2"]
    assert e.problem is None


def test_times_first_request_packet_last_request_packet_first_response_packet():
    c = Conversation()
    c.send("c", b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab", step=1.0)  # ts 101
    c.send("c", b"cdef", step=1.0)  # ts 102: the request is complete
    c.send("s", response(200, b"x" * 10)[:20], step=0.5)  # ts 102.5: first response byte
    c.send("s", response(200, b"x" * 10)[20:], step=1.0)
    (e,) = c.exchanges
    assert (e.request.first_ts, e.request.last_ts, e.response.first_ts) == (101.0, 102.0, 102.5)
    assert e.request.first_frame == 1 and e.response.first_frame == 3


def test_chunked_bodies_are_decoded_and_trailers_kept_apart():
    c = Conversation()
    body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-T: 1\r\n\r\n"
    c.send("c", b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    c.send("s", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    (e,) = c.exchanges
    assert e.request.body == b"Wikipedia in\r\n\r\nchunks." and e.request.body_size == 23
    assert e.request.trailers == (("Expires", "never"), ("X-T", "1"))
    assert ("Expires", "never") not in e.request.headers
    assert e.response.body == b"abc" and e.response.chunked


@pytest.mark.parametrize("status", [204, 304, 100])
def test_no_body_for_204_304_and_interim_responses(status):
    c = Conversation()
    c.send("c", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    # A Content-Length on these responses does not announce a body (RFC 9112 6.3 rule 1).
    c.send("s", b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    c.send("s", response(200, b"second"))
    if status == 100:  # interim: skipped, the 200 answers /a
        assert c.summary()[0][:5] == ("GET", b"/a", None, 200, b"second")
        assert c.conn.interim_responses == 1
    else:
        assert [s[3] for s in c.summary()] == [status, 200]
        assert c.exchanges[0].response.body is None and c.exchanges[1].response.body == b"second"


def test_head_response_has_no_body_whatever_its_content_length_says():
    c = Conversation()
    c.send("c", b"HEAD /big HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    c.send("s", b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n" + response(200, b"n"))
    assert [(s[1], s[3], s[4]) for s in c.summary()] == [(b"/big", 200, None), (b"/next", 200, b"n")]


def test_pipelined_requests_in_one_segment_pair_in_order_and_get_distinct_indexes():
    c = Conversation()
    c.send("c", b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5)))
    c.send("s", b"".join(response(200, b"r%d" % i) for i in range(5)))
    assert [(s[1], s[4]) for s in c.summary()] == [(b"/%d" % i, b"r%d" % i) for i in range(5)]
    assert [e.request.index for e in c.exchanges] == [0, 1, 2, 3, 4]
    assert {e.request.first_frame for e in c.exchanges} == {1}


def test_expect_100_continue_body_after_the_interim_response():
    c = Conversation()
    c.send("c", b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    c.send("s", b"HTTP/1.1 100 Continue\r\n\r\n")
    c.send("c", b"data")
    c.send("s", response(200, b"ok"))
    assert c.summary() == [("POST", b"/up", b"data", 200, b"ok", None)]


def test_expect_100_continue_refused_before_the_body_ends_the_request_without_body():
    c = Conversation()
    c.send("c", b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    c.send("s", response(417, b"no"))
    c.send("c", b"GET /after HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"yes"))
    assert c.summary() == [("POST", b"/up", None, 417, b"no", "request_body_not_sent"),
                           ("GET", b"/after", None, 200, b"yes", None)]


def test_http10_response_without_length_ends_at_close():
    c = Conversation()
    c.send("c", b"GET /old HTTP/1.0\r\n\r\n")
    c.send("s", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
    c.send("s", b"this")
    assert c.exchanges == []
    c.end("fin")
    assert c.summary() == [("GET", b"/old", None, 200, b"all of this", None)]
    assert c.exchanges[0].request.close


def test_close_delimited_body_cut_by_reset_or_capture_end_is_incomplete():
    c = Conversation()
    c.send("c", b"GET / HTTP/1.0\r\n\r\n")
    c.send("s", b"HTTP/1.0 200 OK\r\n\r\npart")
    c.end("capture_end")
    assert c.summary() == [("GET", b"/", None, 200, b"part", "response_cut")]


def test_http09_simple_request_and_status_less_response():
    c = Conversation()
    c.send("c", b"GET /zeek.html\n")
    c.send("s", b"<html>\nhi\n</html>\n")
    c.end("fin")
    (e,) = c.exchanges
    assert (e.request.version, e.request.target, e.response.status, e.response.body) == (
        "HTTP/0.9", b"/zeek.html", None, b"<html>\nhi\n</html>\n")


def test_http09_allows_only_get_and_a_target():
    for line in (b"POST /zeek.html\n", b"GET \n"):
        c = Conversation()
        c.send("c", line)
        c.end()
        assert c.exchanges == [] and c.drops == ["bad_request"], line


def test_bare_lf_heads_are_accepted():
    c = Conversation()
    c.send("c", b"GET /lf HTTP/1.1\nHost: h\n\n")
    c.send("s", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
    assert c.summary() == [("GET", b"/lf", None, 200, b"ok", None)]
    assert c.exchanges[0].request.headers == (("Host", "h"),)


def test_upgrade_101_stops_parsing_both_directions():
    c = Conversation()
    c.send("c", b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    c.send("c", b"\x81\x85garbage frames that are not HTTP")
    c.send("s", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
    c.send("c", b"GET /not-a-request HTTP/1.1\r\n\r\n")
    assert c.summary() == [("GET", b"/ws", None, 101, None, None)]
    assert c.conn.state == "upgraded" and c.drops == []


def test_refused_upgrade_goes_on_with_http():
    c = Conversation()
    c.send("c", b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    c.send("s", response(400, b"no") + response(200, b"next"))
    assert [(s[1], s[3]) for s in c.summary()] == [(b"/ws", 400), (b"/next", 200)]


def test_connect_2xx_is_a_tunnel():
    c = Conversation()
    c.send("c", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    c.send("s", b"HTTP/1.1 200 Connection established\r\n\r\n")
    c.send("c", b"\x16\x03\x01 TLS bytes")
    assert c.summary() == [("CONNECT", b"example.com:443", None, 200, None, None)]
    assert c.conn.state == "upgraded"


def test_body_over_max_body_is_kept_to_the_limit_and_says_how_large_it_was():
    c = Conversation(max_body=10)
    body = bytes(range(256)) * 4
    c.send("c", b"POST / HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + body[:300])
    c.send("c", body[300:])
    c.send("s", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n" + b"z" * 20 + b"\r\n0\r\n\r\n")
    (e,) = c.exchanges
    assert e.request.body == body[:10] and e.request.truncated and e.request.body_size == 1024
    assert e.response.body == b"z" * 10 and e.response.truncated and e.response.body_size == 20


def test_gap_inside_a_known_length_body_keeps_the_framing_and_marks_the_request():
    c = Conversation()
    c.send("c", b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    c.gap("c", 4)
    c.send("c", b"hij" + b"GET /next HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"1") + response(200, b"2"))
    (first, second) = c.exchanges
    assert first.problem == "request_gap" and first.request.missing == 4 and first.request.body == b"abchij"
    assert second.problem is None and second.request.target == b"/next"


def test_server_gap_between_responses_pairs_by_ack_and_marks_the_lost_response():
    c = Conversation()
    c.send("c", b"GET /1 HTTP/1.1\r\n\r\n")
    c.gap("s", len(response(200, b"one")))  # the first response was not captured
    c.send("c", b"GET /2 HTTP/1.1\r\n\r\n")
    c.send("s", b"HTTP/1.1 200 X\r\nContent-Length: 3\r\n\r\ntwo")  # ACKs both requests
    assert c.summary() == [("GET", b"/1", None, None, None, "response_gap"), ("GET", b"/2", None, 200, b"two", None)]
    assert c.drops == ["response_stream_gap"]


def test_client_gap_response_to_lost_request_is_not_given_to_the_next_request():
    c = Conversation()
    c.send("c", b"GET /1 HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"one"))
    c.gap("c", 30)  # a whole request lost
    c.send("s", response(200, b"lost"))  # its response: ACKs only up to the gap's end
    c.send("c", b"GET /3 HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"three"))
    assert [(s[1], s[4], s[5]) for s in c.summary()] == [(b"/1", b"one", None), (b"/3", b"three", None)]
    assert c.drops == ["request_stream_gap", "response_to_lost_request"]


def test_midstream_start_skips_to_the_first_message_boundary():
    c = Conversation(midstream=True)
    c.send("c", b"tail of an earlier body")
    c.send("s", b"tail of an earlier response")
    c.send("c", b"GET /first HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"f"))
    assert c.summary() == [("GET", b"/first", None, 200, b"f", None)]
    assert c.conn.client.skipped == 23 and c.conn.server.skipped == 27


def test_requests_without_response_at_the_end_are_incomplete_and_in_order():
    c = Conversation()
    c.send("c", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    c.send("s", response(200, b"a"))
    c.end("reset")
    assert [(s[1], s[5]) for s in c.summary()] == [(b"/a", None), (b"/b", "no_response")]


def test_not_http_connection_is_marked_and_nothing_is_dropped():
    c = Conversation()
    c.send("c", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    c.send("s", b"\x16\x03\x03")
    assert c.conn.state == "not_http" and c.exchanges == [] and c.drops == []


def test_malformed_request_lines_kept_as_written_like_servers_answer_them():
    c = Conversation()
    c.send("c", b"OPTIONS HTTP/1.1\nHost: h\n\n")  # no version: HTTP/0.9 form with fields
    c.send("s", response(400))
    c.send("c", b"GET / HTTP/1.\nHost: h\n\n")  # a version that is not one
    c.send("s", response(200))
    assert [(e.request.method, e.request.target, e.request.version) for e in c.exchanges] == [
        ("OPTIONS", b"HTTP/1.1", "HTTP/0.9"), ("GET", b"/", "HTTP/1.")]


def test_folded_and_broken_header_lines():
    c = Conversation()
    c.send("c", b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\nno colon here\r\nHost:  h  \r\n\r\n")
    c.send("s", response(200))
    (e,) = c.exchanges
    assert e.request.headers == (("X-Long", "a b"), ("Host", "h"))
    assert e.request.bad_lines == 1


def stream_pair() -> tuple[bytes, bytes]:
    requests = (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                + b"POST /b HTTP/1.1\r\nContent-Length: 7\r\n\r\npayload"
                + b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
                + b"HEAD /d HTTP/1.1\r\n\r\n")
    responses = (response(200, b"A") + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nB\r\n0\r\n\r\n"
                 + b"HTTP/1.1 100 Continue\r\n\r\n" + response(204)
                 + b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    return requests, responses


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_gives_the_same_exchanges(seed):
    rng = random.Random(seed)
    requests, responses = stream_pair()
    whole = Conversation()
    whole.send("c", requests)
    whole.send("s", responses)
    c = Conversation()
    cuts = {"c": sorted(rng.sample(range(1, len(requests)), rng.randint(1, 30))),
            "s": sorted(rng.sample(range(1, len(responses)), rng.randint(1, 20)))}
    pieces = {}
    for side, data in (("c", requests), ("s", responses)):
        bounds = [0, *cuts[side], len(data)]
        pieces[side] = [data[a:b] for a, b in itertools.pairwise(bounds)]
    # All client data first keeps the ACK numbers as large as in the whole-segment run.
    for piece in pieces["c"]:
        c.send("c", piece)
    for piece in pieces["s"]:
        c.send("s", piece)
    assert c.summary() == whole.summary()
    assert [s[1] for s in c.summary()] == [b"/a", b"/b", b"/c", b"/d"]
    assert c.exchanges[2].request.trailers == (("T", "1"),)


def test_feeding_one_byte_at_a_time():
    requests, responses = stream_pair()
    c = Conversation()
    for i in range(len(requests)):
        c.send("c", requests[i:i + 1])
    for i in range(len(responses)):
        c.send("s", responses[i:i + 1])
    whole = Conversation()
    whole.send("c", requests)
    whole.send("s", responses)
    assert c.summary() == whole.summary() and len(c.summary()) == 4
