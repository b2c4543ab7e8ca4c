"""The ordered watermark never commits past an unfinished offset."""

import random

from shadowtap.streams.watermark import PartitionWatermark


def test_out_of_order_acks_commit_only_up_to_the_first_gap():
    w = PartitionWatermark()
    for offset in (10, 11, 12, 13):
        w.delivered(offset)
    assert not w.ack(12) and w.committable is None
    assert w.ack(10) and w.committable == 11
    assert not w.ack(13) and w.committable == 11
    assert w.ack(11) and w.committable == 14
    assert w.pending == 0


def test_random_completion_order_matches_the_lowest_outstanding_offset():
    rng = random.Random(7)
    w = PartitionWatermark()
    offsets = list(range(100, 1100, 3))  # gaps between offsets, as compaction or transactions leave
    for o in offsets:
        w.delivered(o)
    order = offsets[:]
    rng.shuffle(order)
    done: set[int] = set()
    for o in order:
        w.ack(o)
        done.add(o)
        unfinished = [x for x in offsets if x not in done]
        expected = None
        finished_prefix = [x for x in offsets if unfinished and x < unfinished[0]] if unfinished else offsets
        if finished_prefix:
            expected = finished_prefix[-1] + 1
        assert w.committable == expected
