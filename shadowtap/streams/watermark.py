"""Ordered acknowledgement per partition: the offset to commit never passes a gap.

Records complete out of order (a slow target, several targets); committing the highest
acked offset would lose the unfinished ones below it on a restart. The watermark is the
lowest offset still outstanding, so a restart re-delivers everything not yet finished and
nothing finished before it is lost (at-least-once).
"""

from __future__ import annotations

from collections import deque


class PartitionWatermark:
    """Tracks delivered offsets of one partition in delivery order."""

    __slots__ = ("_acked", "_outstanding", "committable")

    def __init__(self) -> None:
        self._outstanding: deque[int] = deque()
        self._acked: set[int] = set()
        self.committable: int | None = None
        """The next offset to consume after a restart (Kafka's commit convention), or None."""

    def delivered(self, offset: int) -> None:
        """An offset was handed out; it is outstanding until acked."""
        self._outstanding.append(offset)

    def ack(self, offset: int) -> bool:
        """Mark an offset done; returns True when the committable offset moved."""
        self._acked.add(offset)
        moved = False
        while self._outstanding and self._outstanding[0] in self._acked:
            done = self._outstanding.popleft()
            self._acked.discard(done)
            self.committable = done + 1
            moved = True
        return moved

    @property
    def pending(self) -> int:
        """Offsets handed out and not yet acked."""
        return len(self._outstanding)
