"""parsers.nginx: format compilation, nginx escaping, the Record mapping, nginx.conf reading,
and the real access logs in shared/data/real/nginx (see its SOURCES.md)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from parsers.nginx import PRESETS, compile_format, read_format_file
from shadowtap.errors import FormatError, ParseError
from shadowtap.record import Origin, Record, Response

REAL = Path(__file__).resolve().parents[3] / "shared/data/real/nginx"

COMBINED = PRESETS["combined"]
MAIN = PRESETS["main"]


def parse(fmt: str, line: bytes, escape: str = "default", offset: int = 0) -> Record:
    return compile_format(fmt, escape).parse(line, name="access.log", offset=offset, fingerprint="fp")


def reason(fmt: str, line: bytes, escape: str = "default") -> str:
    with pytest.raises(ParseError) as e:
        parse(fmt, line, escape)
    return e.value.reason


def local_ts(text: str) -> float:
    """An independent oracle for $time_local."""
    return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()


def nginx_escape(data: bytes) -> bytes:
    """What nginx's default escaping writes for a variable value."""
    return b"".join(
        b"\\x%02X" % c if c < 0x20 or c in (0x22, 0x5C) or c >= 0x7F else bytes([c]) for c in data
    )


def json_escape(data: bytes) -> bytes:
    """What ngx_escape_json writes for a variable value."""
    named = {0x22: b'\\"', 0x5C: b"\\\\", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x08: b"\\b",
             0x0C: b"\\f"}
    return b"".join(
        named[c] if c in named else b"\\u00%02X" % c if c < 0x20 else bytes([c]) for c in data
    )


def combined_line(request: bytes = b"GET /index.html HTTP/1.1", user: bytes = b"-", referer: bytes = b"-",
                  agent: bytes = b"curl/8.5.0", status: bytes = b"200", size: bytes = b"612") -> bytes:
    return (b'203.0.113.9 - ' + user + b' [10/Oct/2000:13:55:36 -0700] "' + request + b'" ' + status
            + b" " + size + b' "' + referer + b'" "' + agent + b'"')


# -- the Record mapping ---------------------------------------------------------------------

def test_presets_are_the_reference_strings():
    assert COMBINED == ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                        '"$http_referer" "$http_user_agent"')
    assert MAIN == COMBINED + ' "$http_x_forwarded_for"'
    assert PRESETS["upstreaminfo"] == (
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
        '"$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
        '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length '
        '$upstream_response_time $upstream_status $req_id'
    )
    assert compile_format("combined").variables == (
        "remote_addr", "remote_user", "time_local", "request", "status", "body_bytes_sent",
        "http_referer", "http_user_agent",
    )
    assert compile_format("${remote_addr}x$status").variables == ("remote_addr", "status")


def test_combined_line():
    rec = parse("combined", combined_line(referer=b"http://example.com/start"), offset=4096)
    assert rec == Record(
        id="fp-4096",
        ts=local_ts("10/Oct/2000:13:55:36 -0700"),
        method="GET",
        target="/index.html",
        version="HTTP/1.1",
        host=None,
        headers=(("Referer", "http://example.com/start"), ("User-Agent", "curl/8.5.0")),
        body=None,
        client="203.0.113.9",
        session=None,
        origin=Origin("nginx", "access.log", 4096),
        response=Response(status=200, elapsed_ms=None, bytes=612),
        fields={"remote_user": None},
        target_raw=None,
    )


def test_dash_means_absent():
    rec = parse("combined", combined_line(agent=b"-", user=b"bob"))
    assert rec.headers == ()
    assert rec.fields == {"remote_user": "bob"}
    rec = parse("main", combined_line() + b' "-"')
    assert rec.headers == (("User-Agent", "curl/8.5.0"),)
    rec = parse("main", combined_line() + b' "198.51.100.1, 10.0.0.1"')
    assert rec.headers[-1] == ("X-Forwarded-For", "198.51.100.1, 10.0.0.1")
    # An empty but found value is a value.
    assert parse("combined", combined_line(agent=b"")).headers == (("User-Agent", ""),)


def test_default_escape_is_decoded():
    rec = parse("combined", combined_line(
        request=b"GET /q?a=\\x22x\\x22&b=\\x5C HTTP/1.1", user=b"j\\xC3\\xA9r\\xC3\\xB4me",
        agent=b"say \\x22hi\\x22 \\x5C caf\\xC3\\xA9 \\xFF\\x09",
    ))
    assert rec.target == '/q?a="x"&b=\\'
    assert rec.fields["remote_user"] == "jérôme"
    # Bytes that are not UTF-8 stay visible as \xHH in text fields.
    assert rec.headers == (("User-Agent", 'say "hi" \\ café \\xff\t'),)


def test_json_escape_is_decoded():
    fmt = ('{"addr":"$remote_addr","user":"$remote_user","req":"$request","status":$status,'
           '"ref":"$http_referer","ua":"$http_user_agent","up":"$upstream_addr"}')
    line = ('{"addr":"10.1.2.3","user":"","req":"GET /caf\u00e9?q=\\"a\\" HTTP/1.1","status":200,'
            '"ref":"","ua":"x\\\\y \\"z\\" \\u0001\\t\u00fc","up":"10.0.0.5:80, 10.0.0.6:80"}').encode()
    rec = parse(fmt, line, escape="json")
    assert rec.target == '/café?q="a"'
    assert rec.target_raw is None
    assert rec.client == "10.1.2.3"
    assert rec.headers == (("User-Agent", 'x\\y "z" \x01\tü'),)
    assert rec.fields == {"remote_user": None, "upstream_addr": "10.0.0.5:80, 10.0.0.6:80"}
    assert rec.response == Response(status=200)
    # Raw bytes >= 0x80 pass through json escaping; invalid UTF-8 reaches the target as %HH.
    raw = line.replace("/caf\u00e9".encode(), b"/caf\xe9")
    rec = parse(fmt, raw, escape="json")
    assert (rec.target, rec.target_raw) == ('/caf%E9?q="a"', b'/caf\xe9?q="a"')


def test_none_escape_is_verbatim():
    fmt = '$remote_addr "$request" "$http_user_agent" "$http_referer"'
    rec = parse(fmt, b'10.0.0.1 "GET /a\\x22 HTTP/1.1" "a "quoted" \\ agent" ""', escape="none")
    assert rec.target == "/a\\x22"
    assert rec.headers == (("User-Agent", 'a "quoted" \\ agent'),)


def test_request_line_with_raw_spaces_and_http09():
    assert parse("combined", combined_line(request=b"GET /a b HTTP/1.1")).target == "/a b"
    rec = parse("combined", combined_line(request=b"GET /x"))
    assert (rec.method, rec.target, rec.version) == ("GET", "/x", "HTTP/0.9")
    rec = parse("combined", combined_line(request=b"GET /a b"))
    assert (rec.target, rec.version) == ("/a b", "HTTP/0.9")
    rec = parse("combined", combined_line(request=b"OPTIONS * HTTP/2.0"))
    assert (rec.method, rec.target, rec.version) == ("OPTIONS", "*", "HTTP/2.0")


@pytest.mark.parametrize("request_line", [
    b"", b"hello", b"GET", b" /x HTTP/1.1", b"GET  HTTP/1.1", b"\\x16\\x03\\x01\\x02\\x00 x HTTP/1.1",
])
def test_bad_request_lines(request_line):
    assert reason("combined", combined_line(request=request_line, status=b"400")) == "bad_request_line"


def test_non_utf8_target_keeps_exact_bytes():
    rec = parse("combined", combined_line(request=b"GET /caf\\xE9/\\xC3\\xA9?x=%41 HTTP/1.1"))
    assert rec.target == "/caf%E9/é?x=%41"
    assert rec.target_raw == b"/caf\xe9/\xc3\xa9?x=%41"
    assert rec.target_bytes == b"/caf\xe9/\xc3\xa9?x=%41"


def test_ts_is_log_time_minus_request_time():
    fmt = '$remote_addr [$time_local] "$request" $status $request_time'
    rec = parse(fmt, b'10.0.0.1 [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1.250')
    assert rec.ts == local_ts("10/Oct/2000:13:55:36 -0700") - 1.25
    assert rec.response == Response(status=200, elapsed_ms=1250.0)
    # A request_time that is not a number leaves the log time and is kept in fields.
    rec = parse('[$time_local] "$request" "$request_time"',
                b'[10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" "x"')
    assert rec.ts == local_ts("10/Oct/2000:13:55:36 -0700")
    assert (rec.response, rec.fields) == (Response(), {"request_time": "x"})


def test_msec_gives_millisecond_resolution():
    fmt = '$msec $remote_addr "$request" $status $request_time $bytes_sent'
    rec = parse(fmt, b'1551174397.123 10.0.0.1 "GET / HTTP/1.1" 200 0.100 1234')
    assert rec.ts == pytest.approx(1551174397.023, abs=1e-6)
    assert rec.fields == {"bytes_sent": "1234"}
    assert reason(fmt, b'1551.174.397 10.0.0.1 "GET / HTTP/1.1" 200 0.100 1') == "bad_time"


def test_time_iso8601():
    fmt = '$time_iso8601 "$request" $status'
    rec = parse(fmt, b'2000-10-10T13:55:36-07:00 "GET / HTTP/1.1" 200')
    assert rec.ts == local_ts("10/Oct/2000:13:55:36 -0700")
    assert parse(fmt, b'1970-01-01T00:00:01+00:00 "GET / HTTP/1.1" 200').ts == 1.0
    # $msec wins when both are logged; the other time goes to fields.
    rec = parse('$time_iso8601 $msec "$request"', b'2000-10-10T13:55:36-07:00 971211336.5 "GET / HTTP/1.1"')
    assert (rec.ts, rec.fields) == (971211336.5, {"time_iso8601": "2000-10-10T13:55:36-07:00"})


@pytest.mark.parametrize("fmt, line", [
    ("combined", combined_line().replace(b"10/Oct/2000", b"10/Foo/2000")),
    ("combined", combined_line().replace(b"10/Oct/2000", b"32/Oct/2000")),
    ("combined", combined_line().replace(b"13:55:36", b"25:55:36")),
    ("combined", combined_line().replace(b"-0700", b"0700")),
    ('$time_iso8601 "$request"', b'2000-13-10T13:55:36-07:00 "GET / HTTP/1.1"'),
    ('$time_iso8601 "$request"', b'2000-10-10T13:55:36 "GET / HTTP/1.1"'),
])
def test_bad_time(fmt, line):
    assert reason(fmt, line) == "bad_time"


def test_no_time_variable_gives_ts_zero():
    assert parse('"$request" $status', b'"GET / HTTP/1.1" 200').ts == 0.0


def test_request_parts_when_request_is_absent():
    fmt = '$http_host $request_method "$uri" "$args" $server_protocol $status'
    rec = parse(fmt, b'example.com:8080 POST "/a b/\\xC3\\xA9" "x=1&y=2" HTTP/1.0 201')
    assert (rec.method, rec.target, rec.version) == ("POST", "/a b/é?x=1&y=2", "HTTP/1.0")
    assert rec.host == "example.com:8080"
    assert rec.headers == (("Host", "example.com:8080"),)
    assert parse(fmt, b'- GET "/p" "-" HTTP/1.1 200').target == "/p"
    # $request_uri is the original target and wins over the normalized $uri, which goes to fields.
    rec = parse('$request_method $request_uri "$uri"', b'GET /a/../b?x=1 "/b"')
    assert (rec.target, rec.version, rec.fields) == ("/a/../b?x=1", "HTTP/1.1", {"uri": "/b"})
    assert reason('$remote_addr $status', b"10.0.0.1 200") == "no_request"
    assert reason('$request_method "$uri"', b'- "/x"') == "no_request"


def test_host_headers_and_fields():
    fmt = ('$host $remote_addr "$request" "$http_host" "$http_x_forwarded_for" "$http_user_agent" '
           '"$http_referer" $upstream_addr $proxy_upstream_name $request_length "$request_body"')
    line = (b'example.com 10.0.0.1 "POST /f HTTP/1.1" "example.com:443" "198.51.100.7" "ua/1" "-" '
            b'10.0.0.5:80, 10.0.0.6:80 : 10.0.1.1:80 backend-web 512 "a=1\\x0Ab=\\x22\\x5C"')
    rec = parse(fmt, line)
    assert rec.host == "example.com:443"
    assert rec.headers == (
        ("Host", "example.com:443"), ("X-Forwarded-For", "198.51.100.7"), ("User-Agent", "ua/1"),
    )
    assert rec.body == b'a=1\nb="\\'
    assert rec.fields == {
        "host": "example.com",
        "upstream_addr": "10.0.0.5:80, 10.0.0.6:80 : 10.0.1.1:80",
        "proxy_upstream_name": "backend-web",
        "request_length": "512",
    }
    # Without a Host header logged, $host is the host.
    rec = parse('$host "$request" "$request_body"', b'example.org "GET / HTTP/1.1" "-"')
    assert (rec.host, rec.body, rec.fields) == ("example.org", None, {})
    # Without any response variable there is no response.
    assert rec.response is None


def test_status_that_is_not_a_number():
    rec = parse('"$request" "$status" "$body_bytes_sent"', b'"GET / HTTP/1.1" "abc" "-"')
    assert rec.response == Response()
    assert rec.fields == {"status": "abc"}


@pytest.mark.parametrize("line", [
    combined_line() + b" extra",
    combined_line() + b"\n",
    combined_line()[:-1],
    combined_line(status=b"2000"),
    b"",
    b"hello world",
])
def test_lines_that_do_not_fit_the_format(line):
    assert reason("combined", line) == "no_match"


def test_crlf_line_end_is_accepted():
    assert parse("combined", combined_line() + b"\r").target == "/index.html"


# -- format errors --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, escape, names", [
    ("", "default", "empty"),
    ("   ", "default", "empty"),
    ("combind", "default", "'combind'"),
    ("static text only", "default", "'static text only'"),
    ("$remote_addr $", "default", "'$'"),
    ("$remote_addr ${status", "default", "'${...}'"),
    ("${}", "default", "'${...}'"),
    ("combined", "yaml", "'yaml'"),
    ('$remote_addr "$request', "default", "unclosed '\"' at position 13"),
])
def test_format_errors_name_the_value(fmt, escape, names):
    with pytest.raises(FormatError) as e:
        compile_format(fmt, escape)
    assert names in e.value.message
    assert "\n" not in e.value.message


# -- nginx.conf -----------------------------------------------------------------------------

NGINX_CONF = r"""
user nginx;
events { worker_connections 1024; }
http {
    # log_format main '$remote_addr';   a commented-out definition is ignored
    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '    # a comment between pieces
                      "\"$http_user_agent\" \"$http_x_forwarded_for\"";
    log_format json_log escape=json
        '{"time":"$time_iso8601","req":"$request",'
        '"status":$status,"ua":"$http_user_agent","note":"#not a comment; nor {this}"}';
    log_format tabbed "$remote_addr\t$request_uri";
    server {
        listen 80;
        access_log /var/log/nginx/access.log main;
    }
}
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "nginx.conf"
    path.write_text(NGINX_CONF)
    return str(path)


def test_read_format_file(conf):
    assert read_format_file(conf, "main") == (MAIN, "default")
    fmt, escape = read_format_file(conf, "json_log")
    assert escape == "json"
    assert fmt == ('{"time":"$time_iso8601","req":"$request","status":$status,"ua":"$http_user_agent",'
                   '"note":"#not a comment; nor {this}"}')
    assert read_format_file(conf, "tabbed") == ("$remote_addr\t$request_uri", "default")
    # combined is predefined by nginx.
    assert read_format_file(conf, "combined") == (COMBINED, "default")
    line = (b'{"time":"2000-10-10T13:55:36-07:00","req":"GET /x HTTP/1.1","status":204,'
            b'"ua":"a \\"b\\"","note":"#not a comment; nor {this}"}')
    rec = compile_format(fmt, escape).parse(line, name=None, offset=0, fingerprint="fp")
    assert (rec.target, rec.response.status, rec.headers) == ("/x", 204, (("User-Agent", 'a "b"'),))


def test_read_format_file_errors(conf, tmp_path):
    with pytest.raises(FormatError, match=r"'missing' is not defined .* 'main', 'json_log', 'tabbed'"):
        read_format_file(conf, "missing")
    with pytest.raises(FormatError, match=r"cannot read nginx config '.*nope\.conf'"):
        read_format_file(str(tmp_path / "nope.conf"), "main")
    bad = tmp_path / "bad.conf"
    bad.write_text("http {\n  log_format broken '$remote_addr \"$request\";\n}\n")
    with pytest.raises(FormatError, match=r"unclosed ' quote starting on line 2 of .*bad.conf"):
        read_format_file(str(bad), "broken")
    bad.write_text("log_format odd escape=yaml '$remote_addr';\n")
    with pytest.raises(FormatError, match="unknown escape 'yaml'"):
        read_format_file(str(bad), "odd")
    bad.write_text("log_format open '$remote_addr'\n")
    with pytest.raises(FormatError, match=r"'open' on line 1 .* not terminated"):
        read_format_file(str(bad), "open")
    bad.write_text("log_format empty escape=json;\n")
    with pytest.raises(FormatError, match=r"'empty' .* has no format string"):
        read_format_file(str(bad), "empty")
    bad.write_text("# nothing here\n")
    with pytest.raises(FormatError, match="defines no log_format"):
        read_format_file(str(bad), "main")


# -- round trips ----------------------------------------------------------------------------

ROUND_TRIP_FMT = '$remote_addr "$request" "$http_user_agent" "$request_body"'


def random_bytes(rnd: random.Random) -> bytes:
    """Random bytes, heavy on the ones escaping cares about."""
    special = b'"\\ -\x00\x1f\x7f\x80\xff\xc3\xa9\n\r\t'
    return bytes(rnd.choice(special) if rnd.random() < 0.4 else rnd.randrange(256)
                 for _ in range(rnd.randrange(2, 40)))


@pytest.mark.parametrize("escape, escaper", [("default", nginx_escape), ("json", json_escape)])
def test_round_trip_of_random_bytes(escape, escaper):
    fmt = compile_format(ROUND_TRIP_FMT, escape)
    rnd = random.Random(20240601)
    for n in range(500):
        target, agent, body = random_bytes(rnd), random_bytes(rnd), random_bytes(rnd)
        line = (b'10.0.0.1 "' + escaper(b"PUT " + target + b" HTTP/1.1") + b'" "' + escaper(agent)
                + b'" "' + escaper(body) + b'"')
        rec = fmt.parse(line, name=None, offset=n, fingerprint="fp")
        assert (rec.method, rec.version) == ("PUT", "HTTP/1.1")
        assert rec.target_bytes == target
        assert rec.body == body
        assert rec.headers == (("User-Agent", agent.decode("utf-8", "backslashreplace")),)


# -- real data ------------------------------------------------------------------------------

def real_lines(name: str) -> list[tuple[int, bytes]]:
    """(offset, line) for every line of a real file; a trailing newline ends the last line."""
    data = (REAL / name).read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out, offset = [], 0
    for line in lines:
        out.append((offset, line))
        offset += len(line) + 1
    return out


def outcomes(fmt: str, name: str) -> str:
    """One character per line: R a record, . no_match, B bad_request_line; anything else fails."""
    compiled = compile_format(fmt)
    codes = {"no_match": ".", "bad_request_line": "B"}
    out = []
    for offset, line in real_lines(name):
        try:
            rec = compiled.parse(line, name=name, offset=offset, fingerprint="fp")
        except ParseError as e:
            out.append(codes[e.reason])
        else:
            assert rec.id == f"fp-{offset}" and rec.origin == Origin("nginx", name, offset)
            out.append("R")
    return "".join(out)


def parse_real(fmt: str, name: str, lineno: int) -> Record:
    offset, line = real_lines(name)[lineno - 1]
    return compile_format(fmt).parse(line, name=name, offset=offset, fingerprint="fp")


ACCESS = "beats-nginx-access.log"
TEST = "beats-nginx-test.log"
WITH_HOST = "beats-nginx-test-with-host.log"
INGRESS = "beats-nginx-ingress_controller-test.log"

# The formats the mixed files' lines were written with, identified from the lines.
XFF_FIRST = COMBINED.replace("$remote_addr", "$http_x_forwarded_for", 1)
OTHER_FORMATS = {
    "host+combined": "$host " + COMBINED,
    "host+main": "$host " + MAIN,
    "xff-first": XFF_FIRST,
    "xff+combined": "$http_x_forwarded_for " + COMBINED,
    "qxff+combined": '"$http_x_forwarded_for" ' + COMBINED,
    "host+xff-first": "$host " + XFF_FIRST,
    "host+xff+combined": "$host $http_x_forwarded_for " + COMBINED,
    "host+qxff+combined": '$host "$http_x_forwarded_for" ' + COMBINED,
    "host+paxff+main": "$host " + MAIN.replace("$remote_addr", "$proxy_add_x_forwarded_for", 1),
}


def test_real_files_are_all_here():
    assert {p.name for p in REAL.glob("*.log")} == {ACCESS, TEST, WITH_HOST, INGRESS}
    assert [len(real_lines(n)) for n in (ACCESS, TEST, WITH_HOST, INGRESS)] == [13, 7, 10, 29]


@pytest.mark.parametrize("fmt", ["combined", "main", "upstreaminfo", *OTHER_FORMATS.values()])
@pytest.mark.parametrize("name", [ACCESS, TEST, WITH_HOST, INGRESS])
def test_real_lines_are_records_or_parse_errors(fmt, name):
    assert len(outcomes(fmt, name)) == len(real_lines(name))


def test_real_combined_outcomes():
    assert outcomes("combined", ACCESS) == "RRRRRRRRRRRR."
    assert outcomes("combined", TEST) == "...R..B"
    assert outcomes("combined", WITH_HOST) == "." * 10
    assert outcomes("combined", INGRESS) == "." * 29
    assert outcomes("upstreaminfo", INGRESS) == "R" * 29
    assert Counter(outcomes("main", TEST)) == {"R": 1, ".": 6}


@pytest.mark.parametrize("name, lineno, fmt, expect", [
    (ACCESS, 13, "host+combined", "R"),
    (TEST, 1, "xff-first", "R"), (TEST, 2, "main", "R"), (TEST, 3, "xff-first", "R"),
    (TEST, 5, "qxff+combined", "R"), (TEST, 6, "xff+combined", "R"),
    (WITH_HOST, 1, "host+xff-first", "R"), (WITH_HOST, 2, "host+main", "R"),
    (WITH_HOST, 3, "host+xff-first", "R"), (WITH_HOST, 4, "host+combined", "R"),
    (WITH_HOST, 5, "host+qxff+combined", "R"), (WITH_HOST, 6, "host+xff+combined", "R"),
    (WITH_HOST, 7, "host+combined", "B"), (WITH_HOST, 8, "host+combined", "B"),
    (WITH_HOST, 9, "host+main", "R"), (WITH_HOST, 10, "host+paxff+main", "R"),
])
def test_real_mixed_lines_parse_under_their_own_format(name, lineno, fmt, expect):
    assert outcomes("combined", name)[lineno - 1] == "."
    fmt = MAIN if fmt == "main" else OTHER_FORMATS[fmt]
    assert outcomes(fmt, name)[lineno - 1] == expect


def test_real_access_values():
    rec = parse_real("combined", ACCESS, 2)
    assert (rec.id, rec.client, rec.ts) == ("fp-199", "77.179.66.156", local_ts("25/Oct/2016:14:49:34 +0200"))
    assert (rec.method, rec.target, rec.version) == ("GET", "/favicon.ico", "HTTP/1.1")
    assert rec.response == Response(status=404, bytes=571)
    assert rec.headers[0] == ("Referer", "http://localhost:8080/")
    assert parse_real("combined", ACCESS, 10).response == Response(status=304, bytes=0)
    rec = parse_real(OTHER_FORMATS["host+combined"], ACCESS, 13)
    assert (rec.host, rec.client, rec.ts) == ("lessons.example.com", "192.168.0.1", 1591729839.0)
    assert rec.target == "/A%20Beka%20G1%20Howe/029_AND_30/15%20reading%20elephants.mp4"
    assert rec.response == Response(status=206, bytes=7648063)


def test_real_test_and_with_host_values():
    rec = parse_real(XFF_FIRST, TEST, 1)
    assert rec.client is None
    assert rec.headers[0] == ("X-Forwarded-For", "10.0.0.2, 10.0.0.1, 127.0.0.1")
    rec = parse_real(OTHER_FORMATS["qxff+combined"], TEST, 5)
    assert (rec.client, rec.target) == ("10.2.1.185", "/assets/xxxx?q=100")
    assert rec.headers == (("X-Forwarded-For", "10.5.102.222, 199.96.1.1, 204.246.1.1"),
                           ("User-Agent", "Amazon CloudFront"))
    rec = parse_real(OTHER_FORMATS["xff+combined"], TEST, 6)
    assert rec.client == "10.2.2.121"
    assert rec.headers[0] == ("X-Forwarded-For", "2a03:0000:10ff:f00f:0000:0000:0:8000, 10.225.192.17")
    with pytest.raises(ParseError, match="b''"):
        parse_real("combined", TEST, 7)

    rec = parse_real(OTHER_FORMATS["host+xff+combined"], WITH_HOST, 6)
    assert (rec.host, rec.client) == ("1.128.3.4", "10.2.2.121")
    assert rec.headers[0] == ("X-Forwarded-For", "2a02:cf40:10ff:f00f:0000:0000:0:8000, 10.225.192.17")
    rec = parse_real(OTHER_FORMATS["host+combined"], WITH_HOST, 4)
    assert (rec.host, rec.client, rec.target) == ("example.com:80", "81.2.69.143", "/ocelot")
    rec = parse_real(OTHER_FORMATS["host+paxff+main"], WITH_HOST, 10)
    assert rec.fields == {"proxy_add_x_forwarded_for": "localhost, localhost", "remote_user": None}
    with pytest.raises(ParseError, match="'hello'"):
        parse_real(OTHER_FORMATS["host+combined"], WITH_HOST, 8)


def test_real_ingress_values():
    recs = [parse_real("upstreaminfo", INGRESS, n) for n in range(1, 30)]
    assert Counter(r.method for r in recs) == {"GET": 23, "POST": 2, "DELETE": 1, "PATCH": 1, "PATCHp": 1,
                                               "geti": 1}
    assert [r.version for r in recs].count("HTTP/2.0") == 2
    for n in (5, 6):
        rec = recs[n - 1]
        assert rec.response == Response(status=400, elapsed_ms=0.0, bytes=163)
        assert rec.headers == ()
        assert (rec.fields["proxy_upstream_name"], rec.fields["upstream_addr"]) == ("", None)
    assert (recs[4].method, recs[5].method) == ("PATCHp", "geti")

    rec = recs[22]
    assert {k: rec.fields[k] for k in ("upstream_addr", "upstream_response_length",
                                       "upstream_response_time", "upstream_status", "req_id")} == {
        "upstream_addr": "172.17.0.6:8080, 172.17.0.7:8080",
        "upstream_response_length": "61, 100",
        "upstream_response_time": "0.100, 0.004",
        "upstream_status": "200, 203",
        "req_id": "835136ae24486dbb4156dcbe21f5d402",
    }
    rec = recs[24]
    assert (rec.client, rec.fields["remote_user"], rec.fields["upstream_addr"]) == (
        "2a02:cf40::", "remote_monitoring_user", "[2a02:cf40::]:9200")
    assert rec.ts == pytest.approx(local_ts("24/Aug/2022:21:04:17 +0000") - 0.033, abs=1e-6)
    assert rec.response == Response(status=200, elapsed_ms=33.0, bytes=470)
    rec = recs[25]
    assert (rec.version, rec.response.status) == ("HTTP/2.0", 502)
    assert rec.fields["upstream_addr"] == "[2a02:cf40::7]:5000, [2a02:cf40::4e36]:5000"
    assert recs[27].fields["upstream_addr"] == "unix:/var/run/php-fpm.sock"
    last = recs[28].fields
    assert (last["upstream_response_length"], last["upstream_response_time"]) == (None, "0.100, -")
    assert recs[18].target == "/products/42?address=delhi+technological+university"
    assert recs[0].fields == {
        "remote_user": None, "request_length": "89", "proxy_upstream_name": "default-web-8080",
        "proxy_alternative_upstream_name": "", "upstream_addr": "172.17.0.5:8080",
        "upstream_response_length": "59", "upstream_response_time": "0.000", "upstream_status": "200",
        "req_id": "529a007902362a5f51385a5fa7049884",
    }
