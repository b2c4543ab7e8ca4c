"""parsers.haproxy: built-in and custom log-formats, syslog prefixes, HAProxy's escaping,
header captures, the lines that are skips, and every real sample file in
shared/data/real/haproxy (see its SOURCES.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from parsers.haproxy import PRESETS, compile_format
from shadowtap.errors import FormatError, ParseError, SkipLine
from shadowtap.record import Origin, Record, Response

REAL = Path(__file__).resolve().parents[3] / "shared/data/real/haproxy"

MESSAGE = (b'10.0.1.2:33317 [06/Feb/2009:12:14:14.655] http-in static/srv1 10/0/30/69/109 200 2750 - - ---- '
           b'1/1/1/1/0 0/0 {1wt.eu} {} "GET /index.html HTTP/1.1"')


def local(text: str) -> float:
    """An independent oracle for HAProxy's local dates (`dd/Mmm/yyyy:HH:MM:SS.mmm`)."""
    seconds, _, ms = text.partition(".")
    return time.mktime(time.strptime(seconds, "%d/%b/%Y:%H:%M:%S")) + (int(ms) / 1000 if ms else 0)


def parse(line: bytes, fmt: str = "httplog", headers=(), response_headers=(), offset: int = 0) -> Record:
    return compile_format(fmt, headers, response_headers).parse(line, name="haproxy.log", offset=offset,
                                                                fingerprint="fp")


def outcome(line: bytes, fmt: str = "httplog", headers=()) -> tuple[str, str]:
    """('record', '') or ('skip'/'dead', reason) for one line."""
    try:
        parse(line, fmt, headers)
    except SkipLine as e:
        return "skip", e.reason
    except ParseError as e:
        return "dead", e.reason
    return "record", ""


def test_presets_are_the_reference_strings():
    assert PRESETS["httplog"] == ("%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc "
                                  "%ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r")
    assert PRESETS["tcplog"] == "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq"
    assert PRESETS["httpslog"].startswith(PRESETS["httplog"] + " %[fc_err]/")
    assert PRESETS["clf"].startswith('%{+Q}o %{-Q}ci - - [%trg] %r %ST %B "" "" %cp %ms %ft %b %s')


def test_httplog_line_maps_to_the_record():
    rec = parse(MESSAGE, offset=77)
    assert rec == Record(
        id="fp-77", ts=local("06/Feb/2009:12:14:14.655"), method="GET", target="/index.html",
        version="HTTP/1.1", host=None, headers=(), body=None, client="10.0.1.2", session=None,
        origin=Origin("haproxy", "haproxy.log", 77), response=Response(200, 109.0, 2750),
        fields={"client_port": "33317", "frontend_name": "http-in", "backend_name": "static",
                "server_name": "srv1", "TR": "10", "Tw": "0", "Tc": "30", "Tr": "69",
                "captured_request_cookie": None, "captured_response_cookie": None, "termination_state": "----",
                "actconn": "1", "feconn": "1", "beconn": "1", "srv_conn": "1", "retries": "0",
                "srv_queue": "0", "backend_queue": "0", "captured_request_headers": ["1wt.eu"],
                "captured_response_headers": [""]},
        target_raw=None,
    )


@pytest.mark.parametrize("prefix", [
    b"",                                                             # log stdout format raw
    b"<134>Feb  6 12:14:14 haproxy[14389]: ",                        # format local (2.4+ default)
    b"<134>Feb  6 12:14:14 lb1 haproxy[14389]: ",                    # format rfc3164
    b"<134>1 2009-02-06T12:14:14.655+01:00 lb1 haproxy 14389 - - ",  # format rfc5424
    b'<134>1 2009-02-06T12:14:14Z lb1 haproxy 14389 - [meta a="1\\"]"] ',  # rfc5424 with structured data
    b"Feb  6 12:14:14 localhost haproxy[14389]: ",                   # a syslog daemon's file
    b"2015-08-26T02:09:48+02:00 localhost haproxy[14389]: ",         # rsyslog high-precision dates
    b"haproxy[14389]: ",                                             # the doc's bare tag
    b"<134>",                                                        # format priority
])
def test_syslog_prefix_is_detected_per_line(prefix):
    rec = parse(prefix + MESSAGE)
    assert (rec.method, rec.target, rec.client, rec.response.status) == ("GET", "/index.html", "10.0.1.2", 200)
    assert rec.fields["frontend_name"] == "http-in"


def test_named_captures_become_headers_and_host():
    line = MESSAGE.replace(b"{1wt.eu} {}", b"{shop.test|Mozilla/5.0 (X11) x|} {text/html}")
    rec = parse(line, headers=("Host", "User-Agent", "Referer"), response_headers=("Content-Type",))
    assert rec.headers == (("Host", "shop.test"), ("User-Agent", "Mozilla/5.0 (X11) x"))
    assert rec.host == "shop.test"
    assert rec.response.headers == (("Content-Type", "text/html"),)
    assert "captured_request_headers" not in rec.fields
    with pytest.raises(ParseError) as e:
        parse(line, headers=("Host",))
    assert e.value.reason == "capture_mismatch"


def test_empty_capture_blocks_take_their_separator():
    no_blocks = MESSAGE.replace(b" {1wt.eu} {}", b"")
    one_block = MESSAGE.replace(b" {1wt.eu} {}", b" {a|b}")
    assert parse(no_blocks).fields["captured_request_headers"] is None
    assert parse(one_block).fields["captured_request_headers"] == ["a", "b"]
    assert parse(one_block).fields["captured_response_headers"] is None


def test_haproxy_escapes_are_undone():
    # HAProxy writes bytes outside 32-126, '#' and '"' as #HH, and '{|}' in captures too.
    line = MESSAGE.replace(b"{1wt.eu}", b"{a#7Cb#7Bc#7D#23d #22q#22 \\e #C3#A9}").replace(
        b"/index.html", b"/caf#C3#A9?q=#22x#22")
    rec = parse(line, headers=("X-Test",))
    assert rec.headers == (("X-Test", 'a|b{c}#d "q" \\e é'),)
    assert rec.target == '/café?q="x"'
    invalid = parse(MESSAGE.replace(b"/index.html", b"/a#FFb"))
    assert invalid.target == "/a%FFb" and invalid.target_raw == b"/a\xffb"


def test_clf_as_haproxy_2_6_writes_it():
    # Written by HAProxy 2.6.12 (`option httplog clf` with two request captures); note the
    # quoted strings, the unquoted numbers and termination state, and the trailing space
    # left by the empty response-capture list.
    line = (b'127.0.0.1 - - [27/Nov/2026:20:42:00 +0000] "GET /a?b=1 HTTP/1.1" 503 217 "" "" 47498 498 '
            b'"clf" "be" "s1" 0 0 -1 -1 3006 SC-- 1 1 0 0 3 0 0 "" "" "http://ref/?x=1" "UA #22x#22" ')
    rec = parse(line, "clf", headers=("Referer", "User-Agent"))
    assert (rec.method, rec.target, rec.client, rec.response) == ("GET", "/a?b=1", "127.0.0.1",
                                                                  Response(503, 3006.0, 217))
    assert rec.ts == 1795812120.0
    assert rec.headers == (("Referer", "http://ref/?x=1"), ("User-Agent", 'UA "x"'))
    assert rec.fields["frontend_name"] == "clf" and rec.fields["captured_request_cookie"] is None
    assert rec.fields["Tc"] == "-1" and rec.fields["termination_state"] == "SC--"


def test_clf_header_lists_split_by_their_number_of_names():
    # CLF writes both capture lists as quoted values separated by spaces: only the names given
    # tell where the request list ends and the response list starts.
    line = (b'127.0.0.1 - - [27/Nov/2026:20:42:00 +0000] "GET /a HTTP/1.1" 200 217 "" "" 47498 498 '
            b'"clf" "be" "s1" 0 0 1 1 3 ---- 1 1 0 0 3 0 0 "" "" "shop.test" "text/html" "HIT"')
    rec = parse(line, "clf", headers=("Host",), response_headers=("Content-Type", "X-Cache"))
    assert rec.headers == (("Host", "shop.test"),)
    assert rec.response.headers == (("Content-Type", "text/html"), ("X-Cache", "HIT"))
    rec = parse(line, "clf", headers=("Host", "Content-Type"), response_headers=("X-Cache",))
    assert rec.headers == (("Host", "shop.test"), ("Content-Type", "text/html"))
    assert rec.response.headers == (("X-Cache", "HIT"),)
    rec = parse(line, "clf", headers=("Host",))
    assert rec.headers == (("Host", "shop.test"),) and rec.fields["captured_response_headers"] == ["text/html", "HIT"]


def test_custom_log_format_with_samples_and_request_parts():
    fmt = "%ci [%tr] %{+Q}HM %{+Q}HU %HV %ST %Ta %[req.hdr(host)] %{+Q}[capture.req.hdr(0)] %ID"
    line = (b'192.0.2.7 [06/Feb/2009:12:14:14.001] "POST" "/cart?token=abc" HTTP/1.0 201 12 shop.test '
            b'"curl/8 \\"x\\"" -')
    rec = parse(line, fmt, headers=("User-Agent",))
    assert (rec.method, rec.target, rec.version, rec.host) == ("POST", "/cart?token=abc", "HTTP/1.0", "shop.test")
    assert rec.headers == (("Host", "shop.test"), ("User-Agent", 'curl/8 \\"x\\"'))
    assert rec.response == Response(201, 12.0, None)
    assert rec.fields == {"unique_id": None}


def test_absolute_form_targets_become_origin_form_with_host():
    rec = parse(MESSAGE.replace(b"GET /index.html HTTP/1.1", b"GET https://shop.test:8443/a?b=1 HTTP/2.0"))
    assert (rec.target, rec.host, rec.version) == ("/a?b=1", "shop.test:8443", "HTTP/2.0")


def test_logasap_values_stay_in_fields():
    rec = parse(MESSAGE.replace(b"10/0/30/69/109 200 2750", b"9/10/7/14/+30 200 +243"))
    assert rec.response == Response(200, None, None)
    assert rec.fields["Ta"] == "+30" and rec.fields["bytes_read"] == "+243"


@pytest.mark.parametrize("line, expected", [
    (MESSAGE.replace(b'"GET /index.html HTTP/1.1"', b'"<BADREQ>"'), ("skip", "bad_request")),
    (MESSAGE.replace(b'"GET /index.html HTTP/1.1"', b'""'), ("skip", "empty_request")),
    (b"127.0.0.1:40962 [20/Sep/2018:15:44:23.285] main app/<NOSRV> -1/-1/1 212 SC 1/1/0/0/0 0/0",
     ("skip", "tcplog")),
    (b"haproxy[14385]: Connect from 10.0.1.2:33312 to 10.0.3.31:8012 (www/HTTP)", ("skip", "connect_notice")),
    (b"127.0.0.1:56059 [03/Dec/2012:17:35:10.380] frt/f1: Connection error during SSL handshake",
     ("skip", "connection_error")),
    (b"<133>Nov 27 20:42:00 haproxy[1]: Server be/s1 is DOWN, reason: Layer4 connection problem",
     ("skip", "notice")),
    (MESSAGE[:-12], ("dead", "truncated")),
    (MESSAGE.replace(b"GET /index.html", b"G(T /index.html"), ("dead", "bad_request_line")),
    (MESSAGE.replace(b"06/Feb/2009", b"06/Fex/2009"), ("dead", "bad_time")),
    (MESSAGE.replace(b"06/Feb/2009", b"31/Feb/2009"), ("dead", "bad_time")),
    (b"this is not haproxy", ("dead", "no_match")),
])
def test_lines_without_a_request_are_skips_and_broken_lines_dead_letters(line, expected):
    assert outcome(line) == expected


def test_tcplog_format_makes_every_line_a_skip():
    line = b"127.0.0.1:40962 [20/Sep/2018:15:44:23.285] main app/<NOSRV> -1/-1/1 212 SC 1/1/0/0/0 0/0"
    assert outcome(line, "tcplog") == ("skip", "tcplog")
    assert outcome(MESSAGE, "tcplog") == ("dead", "no_match")


@pytest.mark.parametrize("fmt, message", [
    ("", "empty"),
    ("httplogg", "not a preset"),
    ("%ci %Zz", "'%Zz'"),
    ("%{+json}o %ci", "+json"),
    ("%ci 50%", "'%'"),
])
def test_bad_formats_are_usage_errors_naming_the_problem(fmt, message):
    with pytest.raises(FormatError) as e:
        compile_format(fmt)
    assert message in e.value.message


# -- the real sample files ----------------------------------------------------------------

def outcomes(path: Path, fmt: str = "httplog", headers=()) -> list[tuple[str, str]]:
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [("skip", "blank_line") if not line.strip() else outcome(line, fmt, headers) for line in lines]


R, S, D = "record", "skip", "dead"


def test_real_files_have_sources():
    names = {p.name for p in REAL.glob("*.log")}
    assert names == {
        "beats-haproxy-default.log", "beats-haproxy-haproxy.log", "beats-haproxy-httplog-no-headers.log",
        "beats-haproxy-tcplog.log", "elastic-integrations-haproxy-test-bad-req.log",
        "elastic-integrations-haproxy-test-https.log", "haproxy-doc-configuration-examples.log",
    }


def test_real_beats_haproxy_log():
    # Line 1 is httplog with captures; lines 2-10 a custom variant with a host after
    # backend/server and `-` as the client (SOURCES.md).
    path = REAL / "beats-haproxy-haproxy.log"
    assert outcomes(path) == [(R, "")] + [(D, "no_match")] * 9
    custom = ("%ci:%cp [%tr] %ft %b/%s %[req.hdr(host)] %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc "
              "%ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r")
    assert outcomes(path, custom) == [(D, "no_match")] + [(R, "")] * 9
    line = path.read_bytes().splitlines()[1]
    rec = parse(line, custom)
    assert (rec.client, rec.host, rec.method, rec.target) == (None, "site.domain.com", "OPTIONS", "/api/v2/app/")
    assert rec.fields["client_port"] == "22222" and rec.fields["frontend_name"] == "www-https~"
    first = parse(path.read_bytes().splitlines()[0], headers=("Host", "X-A", "X-B"))
    assert first.host == "docs.example.internal" and first.response == Response(304, 2.0, 168)


def test_real_httplog_no_headers_log():
    path = REAL / "beats-haproxy-httplog-no-headers.log"
    assert outcomes(path) == [(R, "")] * 3 + [(S, "blank_line")]
    recs = [parse(line) for line in path.read_bytes().splitlines()[:3]]
    assert [r.fields["captured_request_headers"] for r in recs] == [None, ["localhost:8888", "", ""],
                                                                     ["localhost:8888", "", ""]]
    assert [r.fields["captured_response_headers"] for r in recs] == [None, None, ["", ""]]
    assert all(r.fields["server_name"] == "<NOSRV>" and r.fields["Tw"] == "-1" for r in recs)


def test_real_tcplog_default_bad_req_and_https_logs():
    assert outcomes(REAL / "beats-haproxy-tcplog.log") == [(S, "tcplog")]
    assert outcomes(REAL / "beats-haproxy-tcplog.log", "tcplog") == [(S, "tcplog")]
    assert outcomes(REAL / "beats-haproxy-default.log") == [(S, "connect_notice")]
    assert outcomes(REAL / "elastic-integrations-haproxy-test-bad-req.log") == [(S, "bad_request")]
    https = REAL / "elastic-integrations-haproxy-test-https.log"
    assert outcomes(https) == [(D, "no_match")]
    assert outcomes(https, "httpslog") == [(R, "")]
    rec = parse(https.read_bytes(), "httpslog", headers=("Host",))
    assert rec.host == "1wt.eu" and rec.fields["ssl_fc_sni"] == "1wt.eu" and rec.fields["ssl_version"] == "TLSv1.3"


def test_real_doc_examples():
    path = REAL / "haproxy-doc-configuration-examples.log"
    assert outcomes(path) == [
        (R, ""), (S, "connect_notice"), (S, "tcplog"), (R, ""), (D, "no_match"), (S, "connection_error"),
        (R, ""), (R, ""), (R, ""), (R, ""), (R, ""), (R, ""), (R, ""), (S, "empty_request"), (S, "empty_request"),
        (S, "tcplog"), (R, ""),
    ]
    lines = path.read_bytes().splitlines()
    proxy = parse(lines[6])  # 2004: no milliseconds, absolute URL, no HTTP version
    assert (proxy.ts, proxy.host, proxy.target, proxy.version) == (
        local("09/Aug/2004:20:26:09"), "fr.adserver.yahoo.com", "/", "HTTP/0.9")
    assert proxy.fields["captured_response_headers"] == ["", "864", "private", "", ""]
