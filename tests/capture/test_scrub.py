"""Secrets never leave the capturing process unless --no-scrub says so: the rules of capture.scrub."""

import pytest

from capture.scrub import HASH_PREFIX, MARKER, Scrubber, scrub
from shadowtap.record import Record, Response, decode_target


def rec(target: str = "/", headers=()) -> Record:
    t, raw = decode_target(target.encode("latin-1"))
    return Record(id="1", ts=0.0, method="GET", target=t, target_raw=raw, headers=tuple(headers))


def test_secret_headers_are_replaced_and_others_kept_in_order():
    out = scrub(rec(headers=[("User-Agent", "ua"), ("Authorization", "Bearer abc"),
                             ("cookie", "sid=1"), ("Proxy-Authorization", "Basic x"), ("Accept", "*/*")]))
    assert out.headers == (("User-Agent", "ua"), ("Authorization", MARKER), ("cookie", MARKER),
                           ("Proxy-Authorization", MARKER), ("Accept", "*/*"))


@pytest.mark.parametrize("target, expected", [
    ("/a?access_token=s3cr3t&page=2", f"/a?access_token={MARKER}&page=2"),
    ("/a?password=hunter2&user=bob", f"/a?password={MARKER}&user=bob"),
    ("/a?api_key=k&apikey=k2&X-Amz-Signature=ab&sig=1", f"/a?api_key={MARKER}&apikey={MARKER}"
                                                        f"&X-Amz-Signature={MARKER}&sig={MARKER}"),
    ("/a?keyboard=1&monkey=2&q=token", "/a?keyboard=1&monkey=2&q=token"),
    ("/a?session_id=9;auth=x", f"/a?session_id={MARKER};auth={MARKER}"),
    ("/no/query", "/no/query"),
])
def test_secret_query_parameters_are_replaced(target, expected):
    assert scrub(rec(target)).target == expected


def test_non_utf8_target_stays_exact_apart_from_the_secret():
    out = scrub(rec("/caf\xe9?token=\xff&x=\xfe"))
    assert out.target_raw == b"/caf\xe9?token=" + MARKER.encode() + b"&x=\xfe"


def test_a_clean_record_is_returned_unchanged():
    r = rec("/a?page=1", [("User-Agent", "ua")])
    assert scrub(r) is r


# -- rules beyond the defaults, hash mode, fields, raw lines ----------------------------------

def test_hash_mode_keeps_cardinality_and_depends_on_the_key():
    a, b = Scrubber("hash", b"k" * 32), Scrubber("hash", b"other key, 32 bytes long........")
    one = a(rec("/x?token=one", [("Cookie", "sid=1")]))
    again = a(rec("/x?token=one", [("Cookie", "sid=1")]))
    two = a(rec("/x?token=two", [("Cookie", "sid=2")]))
    assert one == again and one.target != two.target and one.headers != two.headers
    token = one.target.split("token=")[1]
    assert token.startswith(HASH_PREFIX) and len(token) == len(HASH_PREFIX) + 16 and "one" not in token
    assert b(rec("/x?token=one")).target != one.target
    with pytest.raises(ValueError):
        Scrubber("hash")


def test_extra_headers_and_params_are_exact_names():
    s = Scrubber(headers=["X-Api-Key"], params=["q"])
    out = s(rec("/x?q=secret&qq=kept&Q=also", [("x-api-key", "k1"), ("X-Api-Keys", "kept")]))
    assert out.target == f"/x?q={MARKER}&qq=kept&Q={MARKER}"
    assert out.headers == (("x-api-key", MARKER), ("X-Api-Keys", "kept"))


def test_logged_fields_response_headers_referer_and_form_bodies():
    record = Record(
        id="1", ts=0.0, method="POST", target="/login",
        headers=(("Referer", "https://shop.test/cb?code=1&auth_token=t"), ("Content-Type",
                 "application/x-www-form-urlencoded; charset=utf-8")),
        body=b"user=bob&password=hunter2",
        response=Response(200, headers=(("Set-Cookie", "sid=abc"), ("Content-Type", "text/html"))),
        fields={"cookie_session": "abc", "arg_token": "t", "arg_page": "2", "args": "a=1&secret=s",
                "request_uri": "/login?apikey=k", "captured_request_cookie": "sid=abc",
                "captured_request_headers": ["Bearer zz", "shop.test"], "upstream_addr": "1.2.3.4:80",
                "remote_user": None},
    )
    out = scrub(record)
    assert out.headers[0] == ("Referer", f"https://shop.test/cb?code=1&auth_token={MARKER}")
    assert out.body == f"user=bob&password={MARKER}".encode()
    assert out.response.headers == (("Set-Cookie", MARKER), ("Content-Type", "text/html"))
    assert out.fields == {
        "cookie_session": MARKER, "arg_token": MARKER, "arg_page": "2", "args": f"a=1&secret={MARKER}",
        "request_uri": f"/login?apikey={MARKER}", "captured_request_cookie": MARKER,
        "captured_request_headers": [f"Bearer {MARKER}", "shop.test"], "upstream_addr": "1.2.3.4:80",
        "remote_user": None,
    }
    # A JSON body is not a form: left alone.
    json_body = Record(id="1", ts=0.0, method="POST", target="/", headers=(("Content-Type", "application/json"),),
                       body=b'{"password": "p"}')
    assert scrub(json_body) is json_body


def test_raw_lines_lose_secret_parameters_and_credentials():
    line = (b'1.2.3.4 - - [x] "GET /a?page=2&token=abc;session_id=s HTTP/1.1" 200 3 "-" "Bearer eyJhbGci.x-y" '
            b'"http://r/?api_key=k"')
    out = Scrubber().line(line)
    for secret in (b"abc", b"session_id=s", b"eyJhbGci", b"api_key=k"):
        assert secret not in out
    assert b"page=2" in out and b"token=SCRUBBED" in out and b"Bearer SCRUBBED" in out
    text = Scrubber().text("request line b'GET /?password=p' is bad")
    assert text == "request line b'GET /?password=SCRUBBED' is bad"
