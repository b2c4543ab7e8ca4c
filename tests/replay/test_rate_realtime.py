"""Pacing on the real clock: `--rate 200` for 3 s sends 600 ± 6 requests."""

from __future__ import annotations

import pytest

from replay.options import ReplayOptions, Target
from replay.schedule import Pacing
from replay.shadow import run_shadow
from shadowtap.streams.memory import MemorySource


class SentTimes:
    def __init__(self, into: list[float]) -> None:
        self.into = into

    def on_outcome(self, outcome) -> None:
        self.into.append(outcome.sent)

    def close(self) -> None:
        return None


@pytest.mark.realtime
async def test_rate_200_for_3_seconds_sends_600(serve, records):
    async with serve() as srv:
        options = ReplayOptions(pacing=Pacing(rate=200.0), duration=3.0)
        sent_times: list[float] = []
        listener = SentTimes(sent_times)
        summary = await run_shadow(MemorySource(records(2000)), [Target("t1", srv.url)], options, [listener])
    s = summary.schedule
    assert abs(s.sent - 600) <= 6 and s.dropped == 0
    assert len(srv.seen) == s.sent
    assert abs(s.achieved_rps - 200.0) <= 2.0
    assert 2.9 <= max(sent_times) - min(sent_times) <= 3.1  # really spread over 3 s of wall time
    lag_p99, = s.lag.percentiles([99.0])
    assert lag_p99 < 100.0  # sends keep to their deadlines (generous: shared CI machines)
