"""Watermarks and the event-time buffer, against the order they must reproduce."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.watermarks import (
    INF,
    EventTimeBuffer,
    GatedMarkers,
    SourceClock,
    WatermarkMerge,
    decode_time,
    encode_time,
)


def test_a_source_watermark_is_its_largest_event_time_less_the_lateness():
    clock = SourceClock(lateness_ms=300, idle_ms=2000)
    assert clock.watermark(0, 0, caught_up=False, since_ms=0) == -INF
    clock.observe(0, 1000, now_ms=10)
    clock.observe(0, 800, now_ms=20)  # out of order: the maximum stays
    assert clock.watermark(0, 30, caught_up=False, since_ms=0) == 700
    clock.observe(0, None, now_ms=40)  # a dead letter: activity, no time
    assert clock.watermark(0, 50, caught_up=True, since_ms=0) == 700


def test_a_source_read_to_its_end_and_quiet_long_enough_holds_nothing_back():
    clock = SourceClock(lateness_ms=300, idle_ms=2000)
    clock.observe(1, 5000, now_ms=1000)
    assert clock.watermark(1, 2999, caught_up=True, since_ms=0) == 4700
    assert clock.watermark(1, 3000, caught_up=False, since_ms=0) == 4700  # more to read
    assert clock.watermark(1, 3000, caught_up=True, since_ms=0) == INF
    # A partition never seen counts its quiet time from when it was assigned.
    assert clock.watermark(2, 3000, caught_up=True, since_ms=1500) == -INF
    assert clock.watermark(2, 3500, caught_up=True, since_ms=1500) == INF
    # Once it speaks again, it holds the others back again.
    clock.observe(1, 6000, now_ms=4000)
    assert clock.watermark(1, 4001, caught_up=True, since_ms=0) == 5700


def test_wire_encoding_of_watermarks():
    assert encode_time(INF) is None and decode_time(None) == INF
    assert decode_time(encode_time(1234.0)) == 1234
    with pytest.raises(ValueError, match="no watermark"):
        encode_time(-INF)


def test_a_merge_is_the_minimum_once_every_sender_reported():
    merge = WatermarkMerge()
    assert merge.current() is None
    merge.update(0, 500, senders=3)
    merge.update(2, INF, senders=3)
    assert merge.current() is None  # sender 1 said nothing yet
    merge.update(1, 300, senders=3)
    assert merge.current() == 300
    merge.update(1, 900, senders=3)
    assert merge.current() == 500
    merge.update(0, 100, senders=3)  # the latest counts, even when lower
    assert merge.current() == 100


def test_a_marker_waits_for_the_data_sent_before_it():
    gate = GatedMarkers()
    gate.add(4, "a")
    gate.add(9, "b")
    assert gate.ready() == []
    gate.processed_through(5)
    assert gate.ready() == ["a"]
    gate.processed_through(3)  # never goes back
    gate.add(-1, "c")  # nothing required, but it stays behind "b"
    assert gate.ready() == []
    gate.processed_through(9)
    assert gate.ready() == ["b", "c"]


def test_the_buffer_releases_strictly_before_the_watermark_in_time_then_id_order():
    buffer: EventTimeBuffer[str] = EventTimeBuffer()
    for time_ms, tx in [(30, "c"), (10, "b"), (10, "a"), (20, "d")]:
        assert buffer.push(time_ms, tx, tx) is False
    assert buffer.release(10) == []  # an event at the watermark may still have peers to come
    assert buffer.release(21) == ["a", "b", "d"]
    assert len(buffer) == 1
    assert buffer.push(15, "e", "e") is True  # behind "d", already scored
    assert buffer.release() == ["e"]  # below the current watermark: out at once
    assert buffer.release(INF) == ["c"]
    # An idle source came back: the watermark may drop, holding again.
    assert buffer.push(40, "f", "f") is False
    assert buffer.release(35) == []
    assert len(buffer) == 1
    assert buffer.release(41) == ["f"]


arrival = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 60_000), st.integers(0, 10_000)),
    min_size=1,
    max_size=80,
    unique_by=lambda e: e[2],
)


@settings(max_examples=200, deadline=None)
@given(events=arrival, data=st.data())
def test_any_interleaving_of_ordered_channels_is_scored_in_the_same_order(events, data):
    """The property replays rely on: the release order does not depend on arrival.

    Four channels each carry events in their own order; a channel's watermark
    after an event is the lowest time it can still send. Whatever the
    interleaving of the channels, the merged release order is the sorted order.
    """
    channels: dict[int, list[tuple[int, str]]] = {c: [] for c in range(4)}
    for channel, time_ms, n in sorted(events, key=lambda e: (e[0], e[1])):
        channels[channel].append((time_ms, f"tx-{n:05d}"))
    # Interleave the channels at random, keeping each channel's own order.
    cursors = dict.fromkeys(channels, 0)
    merge = WatermarkMerge()
    for c in channels:
        merge.update(c, -INF, senders=4)
    buffer: EventTimeBuffer[str] = EventTimeBuffer()
    released: list[tuple[int, str]] = []
    while any(cursors[c] < len(channels[c]) for c in channels):
        live = [c for c in channels if cursors[c] < len(channels[c])]
        c = data.draw(st.sampled_from(live))
        time_ms, tx = channels[c][cursors[c]]
        cursors[c] += 1
        assert buffer.push(time_ms, tx, (time_ms, tx)) is False
        ahead = channels[c][cursors[c]][0] if cursors[c] < len(channels[c]) else INF
        merge.update(c, ahead, senders=4)
        released += buffer.release(merge.current())
    released += buffer.release(INF)
    assert released == sorted((t, tx) for _, t, n in events for tx in [f"tx-{n:05d}"])
