"""capture.sample: filters and sampling, each record left out counted by its reason."""

from __future__ import annotations

import re

import pytest

from capture.sample import Selection, compile_path, parse_key, parse_methods, parse_rate, parse_statuses
from shadowtap.errors import UsageError
from shadowtap.record import Record, Response


def rec(i: int = 0, method: str = "GET", target: str = "/a", status: int | None = 200, client: str = "10.0.0.1",
        headers=(), fields=None) -> Record:
    return Record(id=str(i), ts=0.0, method=method, target=target, client=client, headers=tuple(headers),
                  response=None if status is None else Response(status), fields=fields or {})


@pytest.mark.parametrize("text, rate", [("10%", 0.1), ("0.25", 0.25), ("100%", 1.0), (" 1 % ", 0.01), (".5", 0.5)])
def test_rates(text, rate):
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize("text", ["0%", "150%", "2", "ten", "-5%", ""])
def test_bad_rates_name_the_value(text):
    with pytest.raises(UsageError) as e:
        parse_rate(text)
    assert f"--sample {text!r}" in e.value.message


def test_option_parsers():
    assert parse_statuses(("2xx,304", "5XX")) == {"2xx", "304", "5xx"}
    assert parse_methods(("get,HEAD", "POST")) == {"GET", "HEAD", "POST"}
    assert parse_key("cookie:session") == "cookie:session"
    for bad, call in (("2x", lambda: parse_statuses(("2x",))), ("G T", lambda: parse_methods(("G T",))),
                      ("user", lambda: parse_key("user")), ("(", lambda: compile_path("(", "--path"))):
        with pytest.raises(UsageError) as e:
            call()
        assert repr(bad) in e.value.message


def test_filters_give_their_reason():
    select = Selection(methods=frozenset({"GET"}), path=re.compile(r"^/api/"), exclude_path=re.compile(r"health"),
                       statuses=frozenset({"2xx", "304"})).selectors()[0]
    assert select(rec(target="/api/x?q=1"))[1] == ""
    assert select(rec(method="POST", target="/api/x")) == (None, "filtered_method")
    assert select(rec(target="/static/x")) == (None, "filtered_path")
    assert select(rec(target="/x?next=/api/")) == (None, "filtered_path")  # the query is not the path
    assert select(rec(target="/api/health")) == (None, "filtered_path")
    assert select(rec(target="/api/x", status=404)) == (None, "filtered_status")
    assert select(rec(target="/api/x", status=304))[1] == ""
    assert select(rec(target="/api/x", status=None)) == (None, "filtered_status")
    assert Selection().selectors() == (None, None)


def test_random_sampling_keeps_about_the_rate():
    select = Selection(rate=0.1, seed=1).selectors()[0]
    kept = sum(select(rec(i))[0] is not None for i in range(20_000))
    assert 1700 < kept < 2300


@pytest.mark.parametrize("key, make", [
    ("client", lambda user, i: rec(i, client=f"10.0.{user // 250}.{user % 250}")),
    ("header:X-User", lambda user, i: rec(i, headers=[("x-user", f"u{user}")])),
    ("cookie:sid", lambda user, i: rec(i, headers=[("Cookie", f"theme=dark; sid=s{user}")])),
    ("cookie:sid", lambda user, i: rec(i, fields={"cookie_sid": f"s{user}"})),            # nginx $cookie_sid
    ("cookie:sid", lambda user, i: rec(i, fields={"captured_request_cookie": f"sid=s{user}"})),  # HAProxy %CC
])
def test_sampling_by_key_keeps_whole_sessions(key, make):
    select = Selection(rate=0.3, key=key).selectors()[0]
    decisions: dict[int, set[bool]] = {}
    sessions: dict[int, set[str]] = {}
    for i in range(6000):
        user = i % 500
        record, reason = select(make(user, i))
        decisions.setdefault(user, set()).add(record is not None)
        if record is not None:
            assert record.session and record.session.startswith(key.partition(":")[0] + ":")
            assert f"s{user}" not in record.session and f"u{user}" not in record.session
            sessions.setdefault(user, set()).add(record.session)
        else:
            assert reason == "sampled_out"
    assert all(len(d) == 1 for d in decisions.values())  # a user is all in or all out
    assert all(len(s) == 1 for s in sessions.values())
    kept_users = sum(True in d for d in decisions.values())
    assert 100 < kept_users < 200
    # Another shipper (another process, no shared state) decides the same.
    again = Selection(rate=0.3, key=key).selectors()[0]
    assert all((again(make(u, 0))[0] is not None) == (True in decisions[u]) for u in range(500))


def test_records_without_the_key_are_sampled_at_random():
    select = Selection(rate=0.5, key="header:X-User", seed=2).selectors()[0]
    kept = [select(rec(i))[0] for i in range(2000)]
    assert 800 < sum(r is not None for r in kept) < 1200
    assert all(r.session is None for r in kept if r is not None)
