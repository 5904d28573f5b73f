"""A Faust table read and written below Faust's table API; its changelog sent once per batch.

``table[key] = value`` cost about 65 µs of CPU here, where the store's own
write costs about 6: its changelog message went through ``Topic.send_soon``,
the producer buffer's task and a ``FutureMessage`` whose callback writes the
changelog offset into RocksDB for every message, and through the table
sensors. ``table.get(key)`` looked the key up twice (contains, then get).

``TableRows`` writes the store at once, so later reads in the batch see the
write, and keeps the changelog messages until ``flush()``, which hands the
last one of each key to the producer as one record batch per partition (same
key, value and partition as Faust sends: a key written twice in a batch is one
message) and records each partition's last changelog offset in the store once
they are written. Call ``flush()`` before the events that made the writes are acknowledged: Faust
flushes the producer before it commits, so the changelog is written before
their offsets are committed. Writes need a current event (its partition is
the changelog's), as with Faust's table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from functools import cached_property, partial

import faust
from faust.streams import current_event
from faust.types import TP

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

    def __getitem__(self, key: bytes) -> bytes:
        return self.store[key]

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return self.store.get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        partition = self._partition()
        self.store[key] = value
        self._pending[key] = (value, partition)

    def __delitem__(self, key: bytes) -> None:
        partition = self._partition()
        del self.store[key]
        self._pending[key] = (None, partition)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    async def flush(self) -> None:
        """Send the changelog messages of the writes since the last flush."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
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
