"""Secrets never leave the capturing process unless --no-scrub says so."""

import pytest

from capture.scrub import MARKER, scrub
from shadowtap.record import Record, decode_target


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
