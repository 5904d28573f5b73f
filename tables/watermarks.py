"""Event-time watermarks, and a buffer that releases events in event-time order.

Used by ``ordering=event_time`` (replays, backfills). Velocity's merchant stage
sees the transactions of many accounts, relayed by several partitions of its
first stage, so the order they arrive in depends on partition counts and speed.
A merchant window computed at arrival would then differ from one replay to the
next. With watermarks, the merchant stage holds each event until no earlier one
can still come, and scores events in ``(event time, transaction_id)`` order:

1. the orchestrator, per partition of ``transactions``, knows the largest event
   time it has seen; every later event is at most ``allowed_lateness`` older, so
   ``max - lateness`` is that partition's watermark (``SourceClock``). A
   partition that is idle and fully read has nothing more to say: ``+inf``;
2. velocity's first stage takes the minimum over all source partitions, once it
   has processed every request the orchestrator had sent before the watermark
   (``GatedMarkers``, ``WatermarkMerge``), and passes it on to every partition
   of the merchant stage;
3. the merchant stage takes the minimum over the first stage's partitions and
   releases the events below it, oldest first (``EventTimeBuffer``).

An event that arrives behind what was already released is late: it is scored
at once and counted, like an event beyond the allowed lateness.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

INF = math.inf
T = TypeVar("T")


def encode_time(value: float) -> int | None:
    """A watermark on the wire: epoch ms, or null for +inf (an idle source)."""
    if value == -INF:
        raise ValueError("-inf is no watermark: a source that saw nothing sends none")
    return None if value == INF else int(value)


def decode_time(value: int | None) -> float:
    return INF if value is None else float(value)


@dataclass
class SourceClock:
    """Watermarks of the source partitions one orchestrator worker reads."""

    lateness_ms: int
    idle_ms: int
    _max_time: dict[int, int] = field(default_factory=dict)
    _last_seen: dict[int, float] = field(default_factory=dict)  # wall-clock ms

    def observe(self, partition: int, event_time_ms: int | None, now_ms: float) -> None:
        """A message was processed from ``partition`` (its event time, if it had a valid one)."""
        self._last_seen[partition] = now_ms
        if event_time_ms is not None:
            self._max_time[partition] = max(
                self._max_time.get(partition, event_time_ms), event_time_ms
            )

    def watermark(
        self, partition: int, now_ms: float, *, caught_up: bool, since_ms: float
    ) -> float:
        """Every event still to come from ``partition`` is at or after this time.

        ``caught_up``: nothing is left to read in the partition; ``since_ms``: when
        this worker got the partition, the start of its idleness if it saw nothing.
        """
        last = max(self._last_seen.get(partition, since_ms), since_ms)
        if caught_up and now_ms - last >= self.idle_ms:
            return INF
        seen = self._max_time.get(partition)
        return -INF if seen is None else float(seen - self.lateness_ms)


@dataclass
class WatermarkMerge:
    """The minimum of the latest watermark of each of ``senders`` inputs."""

    senders: int | None = None
    latest: dict[int, float] = field(default_factory=dict)

    def update(self, sender: int, value: float, senders: int) -> None:
        self.senders = senders
        self.latest[sender] = value

    def current(self) -> float | None:
        """None until every sender has reported."""
        if self.senders is None or any(s not in self.latest for s in range(self.senders)):
            return None
        return min(self.latest[s] for s in range(self.senders))


@dataclass
class GatedMarkers:
    """Markers that apply only once the data sent before them was processed.

    A marker travels on its own topic, so it can overtake the requests sent
    before it; it names the offset of the last one, and waits for it here.
    """

    processed: int = -1
    pending: deque[tuple[int, Any]] = field(default_factory=deque)

    def processed_through(self, offset: int) -> None:
        self.processed = max(self.processed, offset)

    def add(self, requires_offset: int, marker: Any) -> None:
        self.pending.append((requires_offset, marker))

    def ready(self) -> list[Any]:
        """The markers now in force, oldest first."""
        out = []
        while self.pending and self.pending[0][0] <= self.processed:
            out.append(self.pending.popleft()[1])
        return out


@dataclass(order=True)
class _Held(Generic[T]):
    time_ms: int
    tiebreak: str
    seq: int
    item: T = field(compare=False)


@dataclass
class EventTimeBuffer(Generic[T]):
    """Holds events until the watermark passes them; releases in (time, id) order.

    The watermark may go down again: a source that was idle (``+inf``) and
    starts again reports a finite one. ``released_through`` only goes up: an
    event older than it is late, because a later one was scored without it.
    """

    watermark: float = -INF
    released_through: float = -INF
    _heap: list[_Held[T]] = field(default_factory=list)
    _seq: int = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time_ms: int, tiebreak: str, item: T) -> bool:
        """Hold an event; True when it is late. ``release`` lets it go."""
        self._seq += 1
        heapq.heappush(self._heap, _Held(time_ms, tiebreak, self._seq, item))
        return time_ms < self.released_through

    def release(self, watermark: float | None = None) -> list[T]:
        """Every held event strictly before the watermark, oldest first.

        Strictly: a source's watermark is ``max - lateness``, and an event at
        exactly that time is still on time, so it may yet come.
        """
        if watermark is not None:
            self.watermark = watermark
        out = []
        while self._heap and self._heap[0].time_ms < self.watermark:
            held = heapq.heappop(self._heap)
            self.released_through = max(self.released_through, held.time_ms)
            out.append(held.item)
        return out
