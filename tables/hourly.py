"""A key's events of the last 24 h of its event time, kept parsed and stored a row per hour.

Velocity's windows (per account, tables/windows.py; per merchant,
tables/merchant_windows.py) are computed from a key's raw events, so that they
slide exactly. A busy key holds thousands of them: rewriting and re-reading all
of them on each transaction made one transaction at a merchant with 20,000
events cost ~38 ms and ~700 KB of changelog. Here:

- **In memory**, `HourlyEvents` keeps the events sorted and their ids in a set;
  adding one is a binary search and a list insert (a memmove), and the
  subclasses keep what their windows need beside it. `WindowCache` keeps the
  busiest keys parsed between transactions.
- **In the table**, the state is split by event-time hour. The key's own row
  (its key is the key itself, so lookups route to it) holds the newest hour's
  events, the watermark and the list of older hours; each older hour is a row
  of its own, written when the newest hour moves past it (or when an
  out-of-order event lands in it) and deleted when its last event leaves the
  24 h horizon. A transaction rewrites one hour, not the day.

Everything runs in event time: eviction follows the highest event time seen for
the key (its watermark), never the wall clock, so replaying history gives the
same answers as the live run. A row of an older hour may keep events already
evicted by ``max_events``; `load` applies the horizon and the cap again, which
gives back the same state, because eviction always removes the oldest.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar

import orjson

HOUR_MS = 3_600_000
HORIZON_MS = 24 * HOUR_MS  # nothing older than the widest window is ever counted again
# Between the key and the hour in an older hour's row key: a byte that no UTF-8
# text holds, so no id (an own row's key) can be an hour's key.
SEPARATOR = b"\xff"
# A key keeps every event in its own row up to SPLIT_ABOVE events, and again
# once it is down to INLINE_AT_MOST (see HourlyEvents.rows).
SPLIT_ABOVE = 64
INLINE_AT_MOST = 32


def event_time(item: tuple) -> int:
    return item[0]


def hour_of(time_ms: int) -> int:
    return time_ms // HOUR_MS


def hour_key(key: bytes, hour: int) -> bytes:
    return key + SEPARATOR + str(hour).encode()


class HourlyEvents:
    """Events ``(event_time_ms, transaction_id, ...)``, sorted by time then id.

    Subclasses define ``row_event`` (a stored row back to an event tuple) and
    ``windows``, and may keep indexes up to date in ``_count_in``, ``_count_out``
    and ``_reindex``.
    """

    __slots__ = (
        "events",
        "max_time_ms",
        "late_events",
        "stored_hours",
        "dirty_hours",
        "inline",
        "_ids",
    )

    # Where a key's older hours move to rows of their own and back (see rows()).
    split_above: ClassVar[int] = SPLIT_ABOVE
    inline_at_most: ClassVar[int] = INLINE_AT_MOST

    def __init__(self, max_time_ms: int, late_events: int = 0) -> None:
        self.events: list[tuple] = []
        self.max_time_ms = max_time_ms  # the watermark of this key
        self.late_events = late_events
        self.stored_hours: set[int] = set()  # older hours that have a row of their own
        self.dirty_hours: set[int] = set()  # older hours whose row must be rewritten
        # Every event is in the own row (a small key, or a row of the one-row version).
        self.inline = False
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self.events)

    @staticmethod
    def row_event(row: list) -> tuple:
        raise NotImplementedError

    def windows(self, as_of_ms: int) -> dict[str, dict[str, Any]]:
        """The key's windows ending at ``as_of_ms``."""
        raise NotImplementedError

    def add_event(
        self, event: tuple, *, max_events: int, allowed_lateness_ms: int
    ) -> tuple[bool, bool]:
        """Add one transaction's event; (duplicate, late). A duplicate changes nothing.

        Late: older than the watermark minus the allowed lateness (still counted
        if within 24 h of the watermark).
        """
        time_ms, transaction_id = event[0], event[1]
        if transaction_id in self._ids:
            return True, False
        late = time_ms < self.max_time_ms - allowed_lateness_ms
        self.late_events += late
        head_hour = hour_of(self.max_time_ms)
        self.max_time_ms = max(self.max_time_ms, time_ms)
        if hour_of(self.max_time_ms) != head_hour:
            self.dirty_hours.add(head_hour)  # the newest hour moves on: its events get a row
        if hour_of(time_ms) != hour_of(self.max_time_ms):
            self.dirty_hours.add(hour_of(time_ms))
        # Transaction ids are unique in the list, so tuple order never compares payloads.
        insort(self.events, event)
        self._ids.add(transaction_id)
        self._count_in(event)
        # Evict by event time first, then cap the count so one hot key stays bounded.
        start = bisect_right(self.events, self.max_time_ms - HORIZON_MS, key=event_time)
        start = max(start, len(self.events) - max_events)
        if start > 0:
            for old in self.events[:start]:
                self._ids.discard(old[1])
                self._count_out(old)
            del self.events[:start]
        return False, late

    # --- rows ---------------------------------------------------------------

    def rows(self, key: bytes) -> tuple[dict[bytes, bytes | None], bytes]:
        """What to write after ``add_event``: ({older hour key: row, or None to delete}, own row).

        A small key keeps all its events in its own row: one row written per
        transaction, where rows of their own would cost a second write when
        the hour moves on and a third when it leaves the horizon. Above
        ``split_above`` events its older hours get rows of their own; at
        ``inline_at_most`` or fewer they come back (apart, so that a key near
        one size does not move its rows back and forth).

        Clears the dirty set: call it once per change, and write what it returns.
        """
        writes: dict[bytes, bytes | None] = {}
        size = len(self.events)
        if size <= self.inline_at_most or (self.inline and size <= self.split_above):
            for hour in sorted(self.stored_hours):
                writes[hour_key(key, hour)] = None
            self.stored_hours.clear()
            self.dirty_hours.clear()
            self.inline = True
            return writes, self._own_row(self.events)
        head_hour = hour_of(self.max_time_ms)
        if self.inline:  # every older hour needs its row now
            self.dirty_hours.update(hour_of(e[0]) for e in self.events)
            self.inline = False
        first_hour = hour_of(self.events[0][0]) if self.events else head_hour
        # Hours whose every event left the horizon or the cap lose their row.
        gone = {h for h in self.stored_hours if h < first_hour}
        for hour in sorted(self.dirty_hours | gone):
            if hour == head_hour:
                continue
            events = self._hour(hour)
            if events:
                writes[hour_key(key, hour)] = orjson.dumps(events)
                self.stored_hours.add(hour)
            elif hour in self.stored_hours:
                writes[hour_key(key, hour)] = None
                self.stored_hours.discard(hour)
        self.dirty_hours.clear()
        return writes, self._own_row(self._hour(head_hour))

    def _own_row(self, events: list[tuple]) -> bytes:
        own = {
            "events": events,
            "max_time_ms": self.max_time_ms,
            "late_events": self.late_events,
            "hours": sorted(self.stored_hours),
        }
        return orjson.dumps(own)

    @classmethod
    def load(
        cls: type[H], own: dict[str, Any], get_hour: Callable[[int], list | None], max_events: int
    ) -> H:
        """Rebuild from the key's own row (decoded) and ``get_hour(hour)`` rows.

        The own row of a version that kept the whole day in one row (no "hours")
        loads too; its older hours get rows of their own at the next write.
        """
        state = cls(int(own["max_time_ms"]), int(own.get("late_events", 0)))
        head_hour = hour_of(state.max_time_ms)
        hours = [int(h) for h in own.get("hours", ())]
        found: dict[str, tuple] = {}
        for hour in hours:
            for row in get_hour(hour) or ():
                event = cls.row_event(row)
                found[event[1]] = event
        state.stored_hours = set(hours)
        for row in own["events"]:
            event = cls.row_event(row)
            found[event[1]] = event
            if hour_of(event[0]) != head_hour:
                state.inline = True
        events = sorted(found.values())
        start = bisect_right(events, state.max_time_ms - HORIZON_MS, key=event_time)
        state.events = events[max(start, len(events) - max_events) :]
        state._ids = {e[1] for e in state.events}
        state._reindex()
        return state

    # --- for subclasses -----------------------------------------------------

    def _count_in(self, event: tuple) -> None:
        """``event`` was added."""

    def _count_out(self, event: tuple) -> None:
        """``event``, the oldest, was evicted."""

    def _reindex(self) -> None:
        """``events`` was set whole."""

    def _hour(self, hour: int) -> list[tuple]:
        lo = bisect_left(self.events, hour * HOUR_MS, key=event_time)
        hi = bisect_left(self.events, (hour + 1) * HOUR_MS, key=event_time)
        return self.events[lo:hi]


H = TypeVar("H", bound=HourlyEvents)

# What a key's state takes in memory, roughly (tracemalloc, CPython 3.11): a small
# merchant's indexes ~2 KB, and ~370 B per event of a busy one.
KEY_BYTES = 1_500
EVENT_BYTES = 400


def estimated_bytes(state: HourlyEvents) -> int:
    return KEY_BYTES + EVENT_BYTES * len(state)


class WindowCache:
    """States kept parsed between transactions, least recently used out first.

    Bounded by an estimate of the memory they take. The table stays the truth:
    a key not here is loaded from its rows. Clear it whenever partitions are
    revoked, since their next owner changes the rows.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._states: OrderedDict[bytes, Any] = OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: bytes) -> Any:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def load(
        self,
        cls: type[H],
        table: Mapping[bytes, bytes],
        key: bytes,
        *,
        max_events: int,
        now_ms: int,
    ) -> H:
        """The key's state: kept here, else read from its rows, else new at ``now_ms``."""
        state = self.get(key)
        if state is None:
            state = read_rows(cls, table, key, max_events)
        return cls(now_ms) if state is None else state

    def put(self, key: bytes, state: HourlyEvents) -> None:
        size = estimated_bytes(state)
        self.bytes += size - self._sizes.get(key, 0)
        self._states[key] = state
        self._states.move_to_end(key)
        self._sizes[key] = size
        while self.bytes > self.max_bytes and self._states:
            old, _ = self._states.popitem(last=False)
            self.bytes -= self._sizes.pop(old)

    def clear(self) -> None:
        self._states.clear()
        self._sizes.clear()
        self.bytes = 0


def read_rows(cls: type[H], table: Mapping[bytes, bytes], key: bytes, max_events: int) -> H | None:
    """A key's state from its rows in ``table`` (a Faust table, or any mapping)."""
    own = table.get(key)
    return None if own is None else load_rows(cls, table, key, own, max_events)


def load_rows(
    cls: type[H], table: Mapping[bytes, bytes], key: bytes, own: bytes, max_events: int
) -> H:
    """A key's state from its own row, already read, and its older hours' rows."""

    def get_hour(hour: int) -> list | None:
        row = table.get(hour_key(key, hour))
        return orjson.loads(row) if row is not None else None

    return cls.load(orjson.loads(own), get_hour, max_events)


def write_rows(table: MutableMapping[bytes, bytes], key: bytes, state: HourlyEvents) -> int:
    """Write what changed since the last write; returns the bytes written."""
    writes, own = state.rows(key)
    written = len(own)
    for row_key, row in writes.items():
        if row is None:
            table.pop(row_key, None)
        else:
            table[row_key] = row
            written += len(row)
    table[key] = own
    return written


class BatchWrites(Generic[H]):
    """The keys one batch of transactions changed: read from here first, written once at its end.

    A key with several transactions in a batch is written (and sent to the
    changelog) once, with every change since its last write. ``token`` is what
    the caller needs to write a key (the event it came with); ``flush`` hands it
    to ``before_write`` first. Written states go into the cache only after
    their rows are written, so the cache never lets go of unwritten changes.
    """

    def __init__(
        self,
        cls: type[H],
        cache: WindowCache,
        table: MutableMapping[bytes, bytes],
        max_events: int,
    ) -> None:
        self.cls = cls
        self.cache = cache
        self.table = table
        self.max_events = max_events
        self._changed: dict[bytes, tuple[H, Any]] = {}

    def __len__(self) -> int:
        return len(self._changed)

    def load(self, key: bytes, now_ms: int) -> H:
        held = self._changed.get(key)
        if held is not None:
            return held[0]
        return self.cache.load(self.cls, self.table, key, max_events=self.max_events, now_ms=now_ms)

    def changed(self, key: bytes, state: H, token: Any) -> None:
        self._changed[key] = (state, token)

    def kept(self, key: bytes, state: H) -> None:
        """A key loaded and left as it was (a duplicate): kept in the cache."""
        if key not in self._changed:
            self.cache.put(key, state)

    def flush(self, before_write: Callable[[Any], None]) -> None:
        changed, self._changed = self._changed, {}
        for key, (state, token) in changed.items():
            before_write(token)
            write_rows(self.table, key, state)
            self.cache.put(key, state)
