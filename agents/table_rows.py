"""A Faust table read and written below Faust's table API; its changelog sent once per batch.

``table[key] = value`` cost about 65 µs of CPU here, where the store's own
write costs about 6: its changelog message went through ``Topic.send_soon``,
the producer buffer's task and a ``FutureMessage`` whose callback writes the
changelog offset into RocksDB for every message, and through the table
sensors. ``table.get(key)`` looked the key up twice (contains, then get).

``TableRows`` keeps a batch's writes in memory, where later reads in the batch
see them, until ``flush()``. That writes them to a RocksDB store as one write
batch per partition, straight to the partition's database (Faust's store
layers, its serializers, the current event and its key index, cost more than
RocksDB's own put), and hands the last write of each key to the producer as
one record batch per partition (same key, value and partition as Faust sends:
a key written twice in a batch is one message), then records each partition's
last changelog offset in the store once they are written. Another store (the
memory store of the tests) is written at once through its API. Call
``flush()`` before the events that made the writes are acknowledged: Faust
flushes the producer before it commits, so the changelog is written before
their offsets are committed. Writes need a current event (its partition is
the changelog's), as with Faust's table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from functools import cached_property, partial
from typing import Any

import faust
from faust.streams import current_event
from faust.types import TP
from rocksdict import WriteBatch

from agents.output import Output, Sent


class TableRows(MutableMapping[bytes, bytes]):
    def __init__(self, app: faust.App, table: faust.Table) -> None:
        self.app = app
        self.table = table
        # key -> (value, or None for a delete; partition): the last write of a key wins.
        self._pending: dict[bytes, tuple[bytes | None, int]] = {}

    # Both made by the table when first asked for, once the app is configured.
    @cached_property
    def store(self) -> MutableMapping:
        return self.table.data

    @cached_property
    def changelog(self) -> Output:
        return Output(self.app, self.table.changelog_topic.get_topic_name())

    @cached_property
    def _partition_db(self) -> Callable[[int], Any] | None:
        """A RocksDB store's database of one partition (None: another store, used through its API)."""
        store = self.store
        if getattr(store, "use_rocksdict", False) and hasattr(store, "_db_for_partition"):
            return store._db_for_partition  # type: ignore[no-any-return]
        return None

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def written(self, key: bytes) -> tuple[bool, bytes | None]:
        """(True, value or None for a delete) if ``key`` was written since the last flush."""
        write = self._pending.get(key)
        return (False, None) if write is None else (True, write[0])

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        written = self._pending.get(key)
        if written is not None:  # written in this batch (None in it: deleted)
            return default if written[0] is None else written[0]
        partition_db = self._partition_db
        if partition_db is None:
            return self.store.get(key, default)
        value = partition_db(self._partition()).get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.put(key, value, self._partition())

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """A write to a given partition, whatever the current event."""
        if self._partition_db is None:
            self.store[key] = value
        self._pending[key] = (value, partition)

    def __delitem__(self, key: bytes) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        partition = self._partition()
        if self._partition_db is None:
            del self.store[key]
        self._pending[key] = (None, partition)

    def __iter__(self) -> Iterator[bytes]:
        """The keys written out (by ``flush()``), not this batch's."""
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    def _write_out(self, pending: dict[bytes, tuple[bytes | None, int]]) -> None:
        """A RocksDB store gets a batch's writes as one write batch per partition."""
        if self._partition_db is not None:  # else the store was written at once
            write_batches(pending, self._partition_db)

    async def flush(self) -> None:
        """Send the changelog messages of the writes since the last flush."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._write_out(pending)
        batches = await self.changelog.send_many(
            (key, value, partition) for key, (value, partition) in pending.items()
        )
        last: dict[int, Sent] = {sent.partition: sent for sent in batches}
        for sent in last.values():
            sent.future.add_done_callback(partial(self._persisted, sent))

    def _persisted(self, sent: Sent, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            tp = TP(self.changelog.topic, sent.partition)
            self.store.set_persisted_offset(tp, sent.last_written().offset)

    @staticmethod
    def _partition() -> int:
        event = current_event()
        if event is None:
            raise RuntimeError("a table write needs the event it is for: make it current")
        return event.message.partition


class WrittenFirst(Mapping[bytes, bytes]):
    """A table as lookups read it: the rows' writes not yet written out first, then the table.

    For readers with no current event (HTTP views), which ``TableRows.get`` needs.
    """

    def __init__(self, rows: TableRows, table: Mapping[bytes, bytes]) -> None:
        self.rows = rows
        self.table = table

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        written, value = self.rows.written(key)
        if not written:
            return self.table.get(key, default)
        return default if value is None else value  # None: deleted, not yet written out

    def __iter__(self) -> Iterator[bytes]:
        """The table's keys (the held writes' are not among them until written out)."""
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def write_batches(
    pending: Mapping[bytes, tuple[bytes | None, int]], partition_db: Callable[[int], Any]
) -> None:
    """Writes (key -> value or None for a delete, partition) as one RocksDB write batch per
    partition, to ``partition_db(partition)``."""
    batches: dict[int, WriteBatch] = {}
    for key, (value, partition) in pending.items():
        batch = batches.get(partition)
        if batch is None:
            batch = batches[partition] = WriteBatch(raw_mode=True)  # as Faust opens it
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    for partition, batch in batches.items():
        partition_db(partition).write(batch)


class HeldWrites:
    """Tables' writes held over several batches, and the events that made them.

    Paced, a batch holds a message or two, and flushing each batch's writes
    (one record batch per table and partition to the producer, a RocksDB write
    batch each) was a good part of what such a batch cost: holding them took
    about a tenth off the profile service's CPU alone at 100-1,000/s
    (docs/benchmarks.md, Table writes held over batches). Held, the writes of
    the batches of ``interval_s`` go out together: ``after_batch(events)``
    writes them out once ``interval_s`` passed since the last time, and a
    timer calls ``write_out_due()`` for what the last batches left.

    The events are acknowledged only once their writes are written out, so an
    offset is never committed ahead of the changelog (Faust flushes the
    producer before it commits). Until then the writes are where the tables'
    readers look first (``TableRows.get``, ``TableRows.written``); a crash
    loses them together with the events' acknowledgements, and the events are
    read and handled again, as on any crash. Before a rebalance takes
    partitions away, ``write_out()`` (a revoked partition's changelog must be
    complete before its next owner recovers it).
    """

    def __init__(
        self,
        *rows: TableRows,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self.rows = rows
        self.interval_s = interval_s
        self.clock = clock
        self._events: list[faust.EventT] = []
        self._written_at = float("-inf")
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        """Events whose writes are held."""
        return len(self._events)

    def due(self) -> bool:
        return self.clock() - self._written_at >= self.interval_s

    async def after_batch(self, events: Iterable[faust.EventT]) -> None:
        """A batch handled: hold its events, and write everything out if it is time."""
        self._events.extend(events)
        if self.due():
            await self.write_out()

    async def write_out_due(self) -> None:
        """Write out what is held if it is time (a timer's, after the last batches)."""
        if self._events and self.due():
            await self.write_out()

    async def write_out(self) -> None:
        """Every table's held writes to its store and changelog; then acknowledge their events."""
        async with self._lock:
            events, self._events = self._events, []
            for rows in self.rows:
                await rows.flush()
            self._written_at = self.clock()
            for event in events:
                event.ack()


def watch_held_writes(app: faust.App, held: HeldWrites) -> None:
    """Write out what ``held`` holds once it is due, and before partitions are taken away."""
    if held.interval_s > 0:

        @app.timer(interval=held.interval_s)
        async def write_out_held_writes() -> None:
            await held.write_out_due()

    @app.on_partitions_revoked.connect
    async def write_out_before_revoke(app: faust.App, revoked: set, **kwargs: object) -> None:
        await held.write_out()
