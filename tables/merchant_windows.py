"""A merchant's exact event-time windows: the one key that mixes accounts.

A busy merchant sees thousands of transactions a day. Beside its events
(tables/hourly.py: kept parsed, stored a row per hour) `MerchantWindow` keeps
each account's latest event time in a sorted list, so that both windows as of
the newest event are binary searches, not a walk over the day. A window as of
an earlier time (an out-of-order event) walks that window.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from tables.hourly import HourlyEvents, event_time
from tables.windows import MERCHANT_WINDOWS_MS

# (event_time_ms, transaction_id, account_id), sorted by time then id.
MerchantEvent = tuple[int, str, str]


class MerchantWindow(HourlyEvents):
    """One merchant's events of the last 24 h of its event time, with an account index."""

    __slots__ = ("_counts", "_latest", "_by_latest")

    def __init__(self, max_time_ms: int, late_events: int = 0) -> None:
        super().__init__(max_time_ms, late_events)
        self._counts: dict[str, int] = {}  # account -> its events here
        self._latest: dict[str, int] = {}  # account -> its latest event time
        self._by_latest: list[tuple[int, str]] = []  # (latest time, account), sorted

    @staticmethod
    def row_event(row: list) -> MerchantEvent:
        t, i, a = row
        return (int(t), str(i), str(a))

    def add(
        self,
        *,
        time_ms: int,
        transaction_id: str,
        account_id: str,
        max_events: int,
        allowed_lateness_ms: int,
    ) -> tuple[bool, bool]:
        """Add one transaction; (duplicate, late). A duplicate changes nothing."""
        return self.add_event(
            (time_ms, transaction_id, account_id),
            max_events=max_events,
            allowed_lateness_ms=allowed_lateness_ms,
        )

    def windows(self, as_of_ms: int) -> dict[str, dict[str, int]]:
        """Count and distinct accounts per window ending at ``as_of_ms``."""
        events = self.events
        end = bisect_right(events, as_of_ms, key=event_time)
        out: dict[str, dict[str, int]] = {}
        for name, window_ms in MERCHANT_WINDOWS_MS.items():
            start_ms = as_of_ms - window_ms
            start = bisect_right(events, start_ms, key=event_time)
            if as_of_ms >= self.max_time_ms:
                # No event is newer than as_of: an account is in the window iff
                # its latest event is.
                first = bisect_right(self._by_latest, start_ms, key=event_time)
                accounts = len(self._by_latest) - first
            else:
                accounts = len({e[2] for e in events[start:end]})
            out[name] = {"count": max(0, end - start), "distinct_accounts": accounts}
        return out

    def _count_in(self, event: tuple) -> None:
        time_ms, _, account = event
        self._counts[account] = self._counts.get(account, 0) + 1
        latest = self._latest.get(account)
        if latest is None or time_ms > latest:
            if latest is not None:
                del self._by_latest[bisect_left(self._by_latest, (latest, account))]
            insort(self._by_latest, (time_ms, account))
            self._latest[account] = time_ms

    def _count_out(self, event: tuple) -> None:
        account = event[2]
        left = self._counts[account] - 1
        if left:
            # Eviction takes the oldest first, so the account's latest event stays.
            self._counts[account] = left
        else:
            del self._counts[account]
            latest = self._latest.pop(account)
            del self._by_latest[bisect_left(self._by_latest, (latest, account))]

    def _reindex(self) -> None:
        counts: dict[str, int] = {}
        latest: dict[str, int] = {}
        for time_ms, _, account in self.events:
            counts[account] = counts.get(account, 0) + 1
            latest[account] = time_ms  # sorted: the last one seen is the latest
        self._counts, self._latest = counts, latest
        self._by_latest = sorted((t, a) for a, t in latest.items())
