"""TableRows on RocksDB: a batch's writes read back at once, written out and sent once at flush.

HeldWrites: several batches' writes written out together, their events acknowledged after.
"""

from __future__ import annotations

import weakref

import faust
import pytest
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP, Message

from agents.table_rows import HeldWrites, TableRows, WrittenFirst, watch_held_writes
from apps.factory import make_app
from tests.kafka_helpers import read_topic


def _current(app: faust.App, partition: int) -> Event:
    tp = TP("agent.profile.requests", partition)
    message = Message(tp.topic, partition, 0, 0.0, 0, [], b"k", b"v", None, 1, 1, tp)
    event = Event(app, b"k", b"v", {}, message)
    _current_event.set(weakref.ref(event))
    return event  # keep it referenced while it is current


@pytest.fixture
async def rows(settings):
    settings = settings.model_copy(update={"store": "rocksdb://"})
    app = make_app("rows-test", settings)
    table = app.Table("rows", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    app.finalize()
    await app.producer.start()
    yield app, table, TableRows(app, table), settings
    await app.producer.stop()


async def test_a_batch_reads_its_writes_before_they_are_written_out(rows):
    app, table, rows_, settings = rows
    event = _current(app, 1)
    rows_[b"a"] = b"1"
    rows_[b"a"] = b"2"
    rows_[b"b"] = b"x"
    assert rows_.get(b"a") == b"2" and rows_[b"b"] == b"x"
    assert table.data._db_for_partition(1).get(b"a") is None  # not yet written out
    assert rows_.pop(b"b") == b"x"
    assert rows_.get(b"b") is None and rows_.get(b"b", b"none") == b"none"
    with pytest.raises(KeyError):
        del rows_[b"b"]
    await rows_.flush()
    await app.producer.flush()
    db = table.data._db_for_partition(1)
    assert db.get(b"a") == b"2" and db.get(b"b") is None
    assert table.data._db_for_partition(0).get(b"a") is None  # the event's partition only
    assert rows_.get(b"a") == b"2"  # now from RocksDB
    changelog = await read_topic(
        settings.bootstrap_servers,
        table.changelog_topic.get_topic_name(),
        settings.partitions,
        until=2,
    )
    # A key written twice is sent once, with its last value; a delete as a tombstone.
    assert [(m.partition, m.key, m.value) for m in changelog] == [(1, b"a", b"2"), (1, b"b", None)]
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    assert table.data.persisted_offset(tp) == max(m.offset for m in changelog)
    del event


async def test_a_row_deleted_in_a_later_batch_is_gone_from_rocksdb(rows):
    app, table, rows_, _settings = rows
    event = _current(app, 0)
    rows_[b"k"] = b"v"
    await rows_.flush()
    assert table.data._db_for_partition(0).get(b"k") == b"v"
    del rows_[b"k"]
    assert table.data._db_for_partition(0).get(b"k") == b"v"  # until written out
    await rows_.flush()
    assert table.data._db_for_partition(0).get(b"k") is None
    with pytest.raises(KeyError):
        rows_[b"k"]
    del event


class _Event:
    """What HeldWrites does with an event: acknowledge it."""

    def __init__(self, acked: list[str], name: str) -> None:
        self.acked, self.name = acked, name

    def ack(self) -> bool:
        self.acked.append(self.name)
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _changelog(settings, table, count: int) -> list[tuple[bytes, bytes]]:
    got = await read_topic(
        settings.bootstrap_servers,
        table.changelog_topic.get_topic_name(),
        settings.partitions,
        until=count,
    )
    return [(m.key, m.value) for m in got]


async def test_held_writes_go_out_together_and_only_then_are_their_events_acknowledged(rows):
    app, table, rows_, settings = rows
    clock, acked = _Clock(), []
    held = HeldWrites(rows_, interval_s=0.1, clock=clock)
    db = table.data._db_for_partition(1)
    event = _current(app, 1)

    rows_[b"a"] = b"1"
    await held.after_batch([_Event(acked, "e1")])  # the first batch after a quiet spell: at once
    assert db.get(b"a") == b"1" and acked == ["e1"]

    clock.now += 0.05
    rows_[b"b"] = b"1"
    await held.after_batch([_Event(acked, "e2")])
    clock.now += 0.03
    rows_[b"b"] = b"2"
    rows_[b"c"] = b"1"
    await held.after_batch([_Event(acked, "e3")])
    await held.write_out_due()
    # Held: read back from the rows, not in RocksDB, the events not acknowledged.
    assert len(held) == 2 and acked == ["e1"]
    assert db.get(b"b") is None and db.get(b"c") is None
    assert rows_.written(b"b") == (True, b"2") and rows_.get(b"c") == b"1"
    assert rows_.written(b"a") == (False, None)

    clock.now += 0.03  # 0.11 s since the last write-out
    await held.write_out_due()
    assert db.get(b"b") == b"2" and db.get(b"c") == b"1"
    assert acked == ["e1", "e2", "e3"] and len(held) == 0
    await app.producer.flush()
    # Two batches' writes as one: b once, with its last value.
    assert await _changelog(settings, table, 3) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"1")]
    del event


async def test_no_interval_writes_out_after_every_batch(rows):
    app, table, rows_, _settings = rows
    acked: list[str] = []
    held = HeldWrites(rows_, interval_s=0.0, clock=_Clock())
    event = _current(app, 0)
    for i in range(3):
        rows_[b"k"] = str(i).encode()
        await held.after_batch([_Event(acked, f"e{i}")])
        assert table.data._db_for_partition(0).get(b"k") == str(i).encode()
        assert acked == [f"e{j}" for j in range(i + 1)]
    with pytest.raises(ValueError, match="interval_s"):
        HeldWrites(rows_, interval_s=-1)
    del event


async def test_held_writes_are_written_out_before_partitions_are_taken_away(rows):
    app, table, rows_, _settings = rows
    clock, acked = _Clock(), []
    held = HeldWrites(rows_, interval_s=10.0, clock=clock)
    watch_held_writes(app, held)
    event = _current(app, 1)
    await held.after_batch([])  # written out just now: what follows is held
    rows_[b"r"] = b"v"
    await held.after_batch([_Event(acked, "e1")])
    assert acked == [] and table.data._db_for_partition(1).get(b"r") is None
    await app.on_partitions_revoked.send({TP("agent.profile.requests", 1)})
    assert acked == ["e1"] and table.data._db_for_partition(1).get(b"r") == b"v"
    del event


async def test_a_lookup_reads_the_held_writes_first_then_the_table(rows):
    app, table, rows_, _settings = rows
    event = _current(app, 1)
    rows_[b"kept"] = b"old"
    rows_[b"gone"] = b"old"
    await rows_.flush()
    rows_[b"kept"] = b"new"
    rows_[b"added"] = b"v"
    del rows_[b"gone"]
    db = table.data._db_for_partition(1)
    assert (db.get(b"kept"), db.get(b"added"), db.get(b"gone")) == (b"old", None, b"old")
    lookup = WrittenFirst(rows_, {k: db.get(k) for k in (b"kept", b"gone")})
    assert lookup.get(b"kept") == b"new" and lookup[b"added"] == b"v"
    assert lookup.get(b"gone") is None and lookup.get(b"gone", b"-") == b"-"
    with pytest.raises(KeyError):
        lookup[b"gone"]
    assert lookup.get(b"never") is None
    await rows_.flush()
    assert WrittenFirst(rows_, {b"kept": db.get(b"kept")}).get(b"kept") == b"new"
    del event
