"""TableRows on RocksDB: a batch's writes read back at once, written out and sent once at flush."""

from __future__ import annotations

import weakref

import faust
import pytest
from faust.events import Event
from faust.streams import _current_event
from faust.types import TP, Message

from agents.table_rows import TableRows
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
