"""Exact event-time sliding windows: tables.windows, tables.merchant_windows, tables.hourly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.hourly import (
    HORIZON_MS,
    KEY_BYTES,
    BatchWrites,
    WindowCache,
    estimated_bytes,
    hour_key,
    read_rows,
    write_rows,
)
from tables.merchant_windows import MerchantWindow
from tables.windows import ACCOUNT_WINDOWS_MS, MERCHANT_WINDOWS_MS, AccountWindow

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = int(datetime(2001, 3, 4, 12, 0, tzinfo=UTC).timestamp() * 1000)  # far from today


class EarlySplitAccount(AccountWindow):
    """Older hours in rows of their own from a few events on, so small tests reach them."""

    split_above, inline_at_most = 4, 2


class EarlySplitMerchant(MerchantWindow):
    split_above, inline_at_most = 4, 2


class SplitMerchant(MerchantWindow):
    split_above, inline_at_most = 0, 0


@dataclass
class Added:
    state: AccountWindow
    duplicate: bool
    late: bool


def add(
    state,
    time_ms,
    tx,
    amount=10.0,
    merchant="m1",
    *,
    max_events=1000,
    lateness_ms=HOUR,
    cls=AccountWindow,
):
    """Add to an account's window (a new one if None); the state and what add said."""
    state = cls(time_ms) if state is None else state
    duplicate, late = state.add(
        time_ms=time_ms,
        transaction_id=tx,
        amount=amount,
        merchant_id=merchant,
        max_events=max_events,
        allowed_lateness_ms=lateness_ms,
    )
    return Added(state, duplicate, late)


def test_the_horizon_is_the_widest_window():
    assert max(*ACCOUNT_WINDOWS_MS.values(), *MERCHANT_WINDOWS_MS.values()) == HORIZON_MS


def build(*events, **kwargs) -> AccountWindow:
    state = None
    for event in events:
        state = add(state, *event, **kwargs).state
    return state


def test_a_window_counts_events_after_its_start_and_up_to_as_of():
    state = build((T0 - MIN, "edge"), (T0 - MIN + 1, "inside"), (T0, "now"), (T0 + 1, "future"))
    w = state.windows(T0)
    assert w["1m"]["count"] == 2  # "edge" is exactly one minute old: out; "future": out
    assert w["10m"]["count"] == 3


def test_windows_report_count_sum_max_and_distinct_merchants():
    state = build(
        (T0 - 30 * MIN, "a", 100.0, "m1"),
        (T0 - 5 * MIN, "b", 20.5, "m2"),
        (T0, "c", 30.0, "m2"),
    )
    w = state.windows(T0)
    assert list(w) == ["1m", "10m", "1h", "24h"]
    assert w["1m"] == {"count": 1, "sum": 30.0, "max": 30.0, "distinct_merchants": 1}
    assert w["10m"] == {"count": 2, "sum": 50.5, "max": 30.0, "distinct_merchants": 1}
    assert w["1h"] == {"count": 3, "sum": 150.5, "max": 100.0, "distinct_merchants": 2}


def test_window_sums_are_rounded_to_cents():
    state = build((T0 - 1, "a", 0.1), (T0, "b", 0.2))
    assert state.windows(T0)["1m"]["sum"] == 0.3


def test_an_empty_window_has_zero_count_sum_and_max():
    state = build((T0 - 2 * HOUR, "a"))
    assert state.windows(T0)["1h"] == {
        "count": 0,
        "sum": 0.0,
        "max": 0.0,
        "distinct_merchants": 0,
    }


def test_a_duplicate_transaction_changes_nothing():
    state = build((T0, "a", 10.0), (T0 + MIN, "b", 20.0))
    before = (list(state.events), state.max_time_ms, state.late_events)
    applied = add(state, T0 + 2 * MIN, "a", 999.0, "elsewhere")
    assert applied.duplicate and not applied.late
    assert (applied.state.events, applied.state.max_time_ms, applied.state.late_events) == before
    assert applied.state.windows(T0 + 2 * MIN)["10m"]["count"] == 2


def test_an_out_of_order_event_is_inserted_in_time_order():
    state = build((T0, "a"), (T0 + 10 * MIN, "c"), (T0 + 5 * MIN, "b"))
    assert [e[1] for e in state.events] == ["a", "b", "c"]
    assert state.max_time_ms == T0 + 10 * MIN


def test_windows_as_of_an_earlier_time_do_not_see_later_events():
    state = build((T0, "a"), (T0 + 30 * MIN, "b"))
    assert state.windows(T0)["1h"]["count"] == 1


def test_an_event_beyond_the_allowed_lateness_is_flagged_late_but_still_counted():
    state = build((T0, "a"))
    applied = add(state, T0 - 2 * HOUR, "old", lateness_ms=HOUR)
    assert applied.late and not applied.duplicate
    assert applied.state.late_events == 1
    assert applied.state.windows(T0)["24h"]["count"] == 2


def test_an_event_within_the_allowed_lateness_is_not_late():
    state = build((T0, "a"))
    applied = add(state, T0 - 30 * MIN, "b", lateness_ms=HOUR)
    assert not applied.late
    assert applied.state.late_events == 0


def test_an_event_older_than_24h_is_late_and_not_kept():
    state = build((T0, "a"))
    applied = add(state, T0 - DAY, "ancient")
    assert applied.late
    assert applied.state.late_events == 1
    assert [e[1] for e in applied.state.events] == ["a"]


def test_eviction_follows_event_time_not_the_wall_clock():
    # Events from 2001 stay while no newer event arrives, whatever today is.
    state = build((T0, "a"), (T0 + 1, "a2"), (T0 + HOUR, "b"))
    assert len(state.events) == 3
    state = add(state, T0 + DAY, "c").state
    # "a" is exactly 24 h older than the newest event: gone; "a2" is 1 ms younger: kept.
    assert [e[1] for e in state.events] == ["a2", "b", "c"]
    state = add(state, T0 + DAY + HOUR, "d").state
    assert [e[1] for e in state.events] == ["c", "d"]


def test_max_events_keeps_only_the_newest_events():
    state = build(*[(T0 + i * 1000, f"t{i}") for i in range(10)], max_events=3)
    assert [e[1] for e in state.events] == ["t7", "t8", "t9"]


def test_account_state_round_trips_through_its_rows_and_keeps_working():
    state = build((T0, "a", 12.5, "m1"), (T0 + MIN, "b", 7.25, "m2"), (T0 - HOUR * 2, "c"))
    table: dict[bytes, bytes] = {}
    write_rows(table, b"acct-1", state)
    restored = read_rows(AccountWindow, table, b"acct-1", 1000)
    assert (restored.events, restored.max_time_ms) == (state.events, state.max_time_ms)
    # Restored events must still sort against new ones (tuples, not lists).
    restored = add(restored, T0 + 30_000, "d").state
    assert [e[1] for e in restored.events] == ["c", "a", "d", "b"]


# --- property tests against a brute-force oracle ---------------------------------

# Times on a 10 min grid over ~27 h plus small offsets: ties, events exactly on a
# window edge or 1 ms inside it, out-of-order and late arrivals, evictions. The
# favoured slots sit exactly 10 min, 1 h and 24 h apart.
times = st.builds(
    lambda k, offset_ms: T0 + k * 10 * MIN + offset_ms,
    st.one_of(st.sampled_from([0, 1, 6, 144, 145, 150]), st.integers(0, 160)),
    st.sampled_from([0, 1, MIN - 1, MIN]),
)
fresh_event = st.tuples(
    times, st.integers(1, 100_000).map(lambda c: c / 100), st.sampled_from("abcde")
)
# Each step is a new event or a resend of an earlier one (by index).
steps = st.lists(
    st.one_of(fresh_event, fresh_event, fresh_event, st.integers(0, 1000)), min_size=3, max_size=60
)


class Oracle:
    """Keeps every event ever accepted; answers by filtering, no cleverness."""

    def __init__(self, max_events: int, lateness_ms: int):
        self.max_events, self.lateness_ms = max_events, lateness_ms
        self.accepted: dict[str, tuple] = {}
        self.max_time_ms: int | None = None
        self.late_events = 0

    def retained(self) -> list[tuple]:
        horizon = self.max_time_ms - DAY
        kept = sorted(e for e in self.accepted.values() if e[0] > horizon)
        return kept[-self.max_events :]

    def apply(self, event: tuple) -> tuple[bool, bool]:
        if self.max_time_ms is not None and event[1] in {e[1] for e in self.retained()}:
            return True, False
        late = self.max_time_ms is not None and event[0] < self.max_time_ms - self.lateness_ms
        self.late_events += late
        self.accepted.setdefault(event[1], event)
        self.max_time_ms = event[0] if self.max_time_ms is None else max(self.max_time_ms, event[0])
        return False, late

    def windows(self, as_of_ms: int, windows: dict[str, int]) -> dict[str, list[tuple]]:
        kept = self.retained()
        return {
            name: [e for e in kept if as_of_ms - w < e[0] <= as_of_ms]
            for name, w in windows.items()
        }


def _events(raw_steps):
    sent: list[tuple] = []
    for step in raw_steps:
        if isinstance(step, int):
            if sent:
                sent.append(sent[step % len(sent)])
        else:
            time_ms, amount, who = step
            sent.append((time_ms, f"tx{len(sent)}", amount, who))
    return sent


@settings(max_examples=200, deadline=None)
@given(
    raw_steps=steps,
    max_events=st.sampled_from([3, 10, 10_000]),
    lateness_ms=st.sampled_from([0, 10 * MIN, 6 * HOUR]),
    reload_every=st.sampled_from([1, 3, 1000]),
    cls=st.sampled_from([AccountWindow, EarlySplitAccount]),
)
def test_account_windows_match_a_brute_force_oracle(
    raw_steps, max_events, lateness_ms, reload_every, cls
):
    # Written after each event; read back from the rows every `reload_every` events.
    oracle = Oracle(max_events, lateness_ms)
    table: dict[bytes, bytes] = {}
    state = None
    for n, (time_ms, tx, amount, merchant) in enumerate(_events(raw_steps)):
        if state is not None and n % reload_every == 0:
            state = read_rows(cls, table, b"a", max_events)
        applied = add(
            state,
            time_ms,
            tx,
            amount,
            merchant,
            max_events=max_events,
            lateness_ms=lateness_ms,
            cls=cls,
        )
        assert (applied.duplicate, applied.late) == oracle.apply((time_ms, tx, amount, merchant))
        state = applied.state
        if not applied.duplicate:
            write_rows(table, b"a", state)
        assert state.events == oracle.retained()
        assert state.late_events == oracle.late_events
        for as_of in (time_ms, state.max_time_ms):
            got = state.windows(as_of)
            for name, events in oracle.windows(as_of, ACCOUNT_WINDOWS_MS).items():
                assert got[name]["count"] == len(events)
                assert math.isclose(
                    got[name]["sum"], math.fsum(e[2] for e in events), abs_tol=0.006
                )
                assert got[name]["max"] == max((e[2] for e in events), default=0.0)
                assert got[name]["distinct_merchants"] == len({e[3] for e in events})


# --- merchant windows: tables.merchant_windows ---------------------------------


def merchant(*events, max_events=1000, lateness_ms=HOUR, cls=MerchantWindow) -> MerchantWindow:
    """events: (time_ms, transaction_id, account_id)."""
    state = cls(events[0][0])
    for time_ms, tx, account in events:
        state.add(
            time_ms=time_ms,
            transaction_id=tx,
            account_id=account,
            max_events=max_events,
            allowed_lateness_ms=lateness_ms,
        )
    return state


def test_merchant_windows_count_events_and_distinct_accounts():
    state = merchant((T0 - 2 * HOUR, "t0", "x"), (T0 - MIN, "t1", "y"), (T0, "t2", "y"))
    assert state.windows(T0) == {
        "1h": {"count": 2, "distinct_accounts": 1},
        "24h": {"count": 3, "distinct_accounts": 2},
    }
    # As of an earlier time, later events do not count.
    assert state.windows(T0 - HOUR) == {
        "1h": {"count": 0, "distinct_accounts": 0},
        "24h": {"count": 1, "distinct_accounts": 1},
    }


def test_a_duplicate_merchant_event_changes_nothing():
    state = merchant((T0, "a", "x"))
    assert state.add(
        time_ms=T0 + 5, transaction_id="a", account_id="y", max_events=100, allowed_lateness_ms=0
    ) == (True, False)
    assert state.events == [(T0, "a", "x")]
    assert state.max_time_ms == T0


def rows_table() -> dict[bytes, bytes]:
    return {}


def test_a_busy_merchant_writes_one_hour_not_the_day():
    # 20,000 transactions evenly over 24 h: the last one rewrites its own hour only.
    table = rows_table()
    state = MerchantWindow(T0)
    step = DAY // 20_000
    written = 0
    for i in range(20_000):
        state.add(
            time_ms=T0 + i * step,
            transaction_id=f"tx{i:05d}",
            account_id=f"acct-{i % 5000}",
            max_events=20_000,
            allowed_lateness_ms=HOUR,
        )
        written = write_rows(table, b"m1", state)
    whole_day = sum(len(v) for v in table.values())
    assert written < whole_day / 20
    # Every hour but the newest is a row of its own, and the own row names them.
    own = orjson.loads(table[b"m1"])
    assert len(own["hours"]) == 23
    assert {k for k in table if k != b"m1"} == {hour_key(b"m1", h) for h in own["hours"]}
    assert state.windows(state.max_time_ms)["24h"] == {"count": 20_000, "distinct_accounts": 5000}


def test_a_small_key_writes_one_row_until_it_grows_and_again_once_it_shrinks():
    table = rows_table()
    state = MerchantWindow(T0)
    writes = []

    def add_at(time_ms: int, tx: str) -> None:
        state.add(
            time_ms=time_ms,
            transaction_id=tx,
            account_id="x",
            max_events=1000,
            allowed_lateness_ms=HOUR,
        )
        older, own = state.rows(b"m1")
        writes.append((older, own))
        for row_key, row in older.items():
            if row is None:
                del table[row_key]
            else:
                table[row_key] = row
        table[b"m1"] = own

    for i in range(MerchantWindow.split_above):  # one an hour: the hour moves every time
        add_at(T0 + i * HOUR // 3, f"a{i}")
    assert all(older == {} for older, _own in writes)  # one row each: the own row
    assert set(table) == {b"m1"} and len(orjson.loads(table[b"m1"])["events"]) == 64
    add_at(T0 + 22 * HOUR, "grown")  # 65 events: older hours move to rows of their own
    assert len(writes[-1][0]) == 22 and all(v for v in writes[-1][0].values())
    assert len(orjson.loads(table[b"m1"])["events"]) == 1
    assert read_rows(MerchantWindow, table, b"m1", 1000).events == state.events
    # A day later most have left the horizon: 33 left keep their rows, 32 do not.
    add_at(T0 + DAY + 11 * HOUR - 1, "later")
    assert len(state) > MerchantWindow.inline_at_most and len(table) > 1
    add_at(T0 + DAY + 11 * HOUR + HOUR // 3, "later-2")
    assert len(state) <= MerchantWindow.inline_at_most
    assert set(table) == {b"m1"}  # every hour row deleted, its events back in the own row
    assert read_rows(MerchantWindow, table, b"m1", 1000).events == state.events


def test_hour_rows_leave_with_their_last_event():
    table = rows_table()
    state = merchant((T0, "a", "x"), (T0 + HOUR, "b", "x"), cls=SplitMerchant)
    write_rows(table, b"m1", state)
    assert hour_key(b"m1", T0 // HOUR) in table
    state.add(
        time_ms=T0 + DAY + HOUR,
        transaction_id="c",
        account_id="y",
        max_events=10,
        allowed_lateness_ms=HOUR,
    )
    write_rows(table, b"m1", state)
    assert set(table) == {b"m1"}  # both older hours left the 24 h horizon
    assert [e[1] for e in read_rows(SplitMerchant, table, b"m1", 10).events] == ["c"]


def test_a_merchant_row_that_holds_the_whole_day_loads_and_is_split_at_the_next_write():
    # The form of a merchant's row before rows per hour: every event in one row.
    events = [[T0, "a", "x"], [T0 + 2 * HOUR, "b", "y"], [T0 + 5 * HOUR, "c", "x"]]
    table = {
        b"m1": orjson.dumps({"events": events, "max_time_ms": T0 + 5 * HOUR, "late_events": 1})
    }
    state = read_rows(SplitMerchant, table, b"m1", 100)
    assert state.late_events == 1
    assert state.windows(T0 + 5 * HOUR)["24h"] == {"count": 3, "distinct_accounts": 2}
    state.add(
        time_ms=T0 + 5 * HOUR + 1,
        transaction_id="d",
        account_id="z",
        max_events=100,
        allowed_lateness_ms=HOUR,
    )
    write_rows(table, b"m1", state)
    assert set(table) == {b"m1", hour_key(b"m1", T0 // HOUR), hour_key(b"m1", T0 // HOUR + 2)}
    assert [e[1] for e in orjson.loads(table[b"m1"])["events"]] == ["c", "d"]
    again = read_rows(SplitMerchant, table, b"m1", 100)
    assert again.events == state.events
    assert again.windows(again.max_time_ms) == state.windows(state.max_time_ms)


def test_the_cache_keeps_the_most_recently_used_merchants_within_its_memory_bound():
    a, b = merchant((T0, "a1", "x"), (T0 + 1, "a2", "x")), merchant((T0, "b1", "x"))
    c = merchant((T0, "c1", "x"))
    assert estimated_bytes(a) == estimated_bytes(b) + (estimated_bytes(b) - KEY_BYTES)
    cache = WindowCache(max_bytes=estimated_bytes(a) + estimated_bytes(b))
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") is a  # a is now the most recently used
    cache.put(b"c", c)  # over the bound: b, the least recently used, goes
    assert (cache.get(b"b"), cache.get(b"a"), cache.get(b"c")) == (None, a, c)
    assert cache.bytes == estimated_bytes(a) + estimated_bytes(c)
    a.add(time_ms=T0 + 2, transaction_id="a3", account_id="y", max_events=9, allowed_lateness_ms=0)
    cache.put(b"a", a)  # a grew: now c, the least recently used, goes
    assert (len(cache), cache.get(b"c"), cache.bytes) == (1, None, estimated_bytes(a))
    cache.clear()
    assert (len(cache), cache.bytes, cache.get(b"a")) == (0, 0, None)
    off = WindowCache(max_bytes=0)
    off.put(b"a", a)
    assert off.get(b"a") is None


@settings(max_examples=200, deadline=None)
@given(
    raw_steps=steps,
    max_events=st.sampled_from([3, 10_000]),
    reload_every=st.sampled_from([1, 2, 5, 1000]),
    cls=st.sampled_from([MerchantWindow, EarlySplitMerchant]),
)
def test_merchant_windows_match_a_brute_force_oracle(raw_steps, max_events, reload_every, cls):
    # Written after each event; read back from the rows every `reload_every`
    # events, as a worker does after a restart or when the cache let it go.
    oracle = Oracle(max_events, HOUR)
    table = rows_table()
    state = None
    for n, (time_ms, tx, _amount, account) in enumerate(_events(raw_steps)):
        if state is None:
            state = cls(time_ms)
        elif n % reload_every == 0:
            state = read_rows(cls, table, b"m", max_events)
        duplicate, late = state.add(
            time_ms=time_ms,
            transaction_id=tx,
            account_id=account,
            max_events=max_events,
            allowed_lateness_ms=HOUR,
        )
        assert (duplicate, late) == oracle.apply((time_ms, tx, account))
        if not duplicate:
            write_rows(table, b"m", state)
        assert state.events == oracle.retained()
        assert state.late_events == oracle.late_events
        for as_of in (time_ms, state.max_time_ms):
            got = state.windows(as_of)
            for name, events in oracle.windows(as_of, MERCHANT_WINDOWS_MS).items():
                assert got[name] == {
                    "count": len(events),
                    "distinct_accounts": len({e[2] for e in events}),
                }
    if state is not None:
        loaded = read_rows(cls, table, b"m", max_events)
        assert (loaded.events, loaded.max_time_ms) == (oracle.retained(), oracle.max_time_ms)


def test_no_merchant_id_is_the_key_of_another_merchants_hour():
    # Merchant ids are any text: a control character in one must not reach the
    # row of an older hour of another merchant.
    with pytest.raises(UnicodeDecodeError):
        hour_key(b"m-1", 491_234).decode("utf-8")


def test_the_cache_loads_a_key_kept_else_from_its_rows_else_new():
    table: dict[bytes, bytes] = {}
    stored = merchant((T0, "a", "x"))
    write_rows(table, b"m1", stored)
    cache = WindowCache(max_bytes=10**6)
    kwargs = {"max_events": 100, "now_ms": T0 + 5}
    from_rows = cache.load(MerchantWindow, table, b"m1", **kwargs)
    assert from_rows is not stored and from_rows.events == stored.events
    cache.put(b"m1", from_rows)
    assert cache.load(MerchantWindow, table, b"m1", **kwargs) is from_rows
    new = cache.load(MerchantWindow, table, b"m2", **kwargs)
    assert (new.events, new.max_time_ms) == ([], T0 + 5)


class CountingTable(dict):
    """A table that counts writes, as each would be a changelog message."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append(key)
        super().__setitem__(key, value)


def test_a_batch_writes_each_key_it_changed_once_and_then_keeps_it():
    table = CountingTable()
    cache = WindowCache(max_bytes=1024**2)
    writes = BatchWrites(MerchantWindow, cache, table, 1000)
    tokens = []
    for i, merchant_id in enumerate([b"m1", b"m2", b"m1", b"m1"]):
        state = writes.load(merchant_id, T0 + i)
        assert not state.add(
            time_ms=T0 + i,
            transaction_id=f"tx{i}",
            account_id="a",
            max_events=1000,
            allowed_lateness_ms=HOUR,
        )[0]
        writes.changed(merchant_id, state, f"event {i}")
    assert (len(writes), table.writes, len(cache)) == (2, [], 0)  # nothing written yet
    writes.flush(tokens.append)
    assert tokens == ["event 3", "event 1"]  # each key's last event, first changed first
    assert table.writes == [b"m1", b"m2"]
    assert [e[1] for e in read_rows(MerchantWindow, table, b"m1", 1000).events] == [
        "tx0",
        "tx2",
        "tx3",
    ]
    assert cache.get(b"m1").events == read_rows(MerchantWindow, table, b"m1", 1000).events
    # A duplicate in the next batch changes nothing and writes nothing.
    state = writes.load(b"m2", T0)
    assert state.add(
        time_ms=T0 + 1, transaction_id="tx1", account_id="a", max_events=1000, allowed_lateness_ms=0
    ) == (True, False)
    writes.kept(b"m2", state)
    writes.flush(tokens.append)
    assert (table.writes, tokens) == ([b"m1", b"m2"], ["event 3", "event 1"])
