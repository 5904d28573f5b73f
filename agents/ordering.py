"""Watermark wiring for ``ordering=event_time`` (the logic is in tables/watermarks.py).

Three places take part:

- ``SourceWatermarks`` (orchestrator): observes each transaction it reads and,
  on a timer, sends every partition of ``riskstream.velocity.watermarks`` the
  watermarks of the ``transactions`` partitions it owns, with the offset of the
  last request it sent to that partition of ``agent.velocity.requests``;
- ``RelayedWatermarks`` (velocity, first stage): applies a marker once its
  requests were processed, and sends the minimum over all source partitions to
  every partition of ``riskstream.velocity.by-merchant``;
- ``OrderedMerchantStage`` (velocity, merchant stage): keeps one
  EventTimeBuffer per partition, released by the minimum over the first stage's
  partitions.

Nothing of this runs with ``ordering=arrival``, and the contract topics carry
nothing new: the markers travel on velocity's internal topics.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition
from faust.types import TP

from agents import topics
from agents.consumer import committed_offset, read_to_end
from apps.settings import Settings
from tables.watermarks import (
    INF,
    EventTimeBuffer,
    GatedMarkers,
    SourceClock,
    WatermarkMerge,
    decode_time,
    encode_time,
)

log = logging.getLogger(__name__)

MARKER = "watermark"  # the key of a marker in a by-merchant message


def _now_ms() -> float:
    return time.time() * 1000.0


async def partition_count(app: faust.App, topic: str) -> int:
    """How many partitions ``topic`` has, from the producer's metadata."""
    producer = app.producer._ensure_producer()  # the aiokafka producer
    partitions = await producer.partitions_for(topic)
    return len(partitions)


async def set_fetching(app: faust.App, tps: set[TP], *, fetch: bool) -> None:
    """Stop or resume fetching ``tps``, losing nothing already fetched.

    Faust's ``Consumer.pause_partitions`` drops the rest of a poll under way
    for those partitions, after the client moved past them: they would never
    be read. The aiokafka client's own pause keeps its position, so a paused
    partition is fetched again from where it was. It runs in the consumer's
    thread, as every call into that client does.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    client = thread._ensure_consumer()
    partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]

    async def apply() -> None:
        assigned = client.assignment()
        mine = [tp for tp in partitions if tp in assigned]  # a rebalance may have come first
        if fetch:
            client.resume(*mine)
        else:
            client.pause(*mine)

    await thread.call_thread(apply)


class SourceWatermarks:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.clock = SourceClock(
            lateness_ms=settings.allowed_lateness_s * 1000, idle_ms=settings.source_idle_ms
        )
        self.markers = app.topic(topics.VELOCITY_WATERMARKS)
        self._sent: list[Awaitable[Any]] = []  # velocity requests since the last tick
        self._last_offset: dict[int, int] = {}  # requests partition -> last offset sent
        self._next_offset: dict[int, int] = {}  # source partition -> next to read
        self._assigned_at: dict[int, float] = {}

    def observe(self, event: faust.EventT, event_time_ms: int | None) -> None:
        msg = event.message
        if msg.topic != topics.TRANSACTIONS:
            return  # re-keyed messages come in no source order: they do not move watermarks
        self.clock.observe(msg.partition, event_time_ms, _now_ms())
        self._next_offset[msg.partition] = msg.offset + 1

    def sent_request(self, pending: Awaitable[Any]) -> None:
        self._sent.append(pending)

    def _caught_up(self, tp: TP) -> bool:
        return read_to_end(self.app, tp, self._next_offset.get(tp.partition)) is True

    async def tick(self) -> None:
        owned = sorted(
            tp for tp in self.app.consumer.assignment() if tp.topic == topics.TRANSACTIONS
        )
        now = _now_ms()
        for gone in set(self._assigned_at) - {tp.partition for tp in owned}:
            del self._assigned_at[gone]
        if not owned:
            return
        sources = self.app.consumer.topic_partitions(topics.TRANSACTIONS)
        if not sources:
            return
        # Watermarks first, then the sends they cover: no await in between.
        values = {}
        for tp in owned:
            since = self._assigned_at.setdefault(tp.partition, now)
            value = self.clock.watermark(
                tp.partition, now, caught_up=self._caught_up(tp), since_ms=since
            )
            if value != -INF:  # nothing read yet: no promise to make
                values[str(tp.partition)] = encode_time(value)
        sent, self._sent = self._sent, []
        for pending in sent:
            meta = await pending
            last = self._last_offset.get(meta.partition, -1)
            self._last_offset[meta.partition] = max(last, meta.offset)
        for q in range(await partition_count(self.app, topics.VELOCITY_WATERMARKS)):
            marker = {
                "sources": sources,
                "watermarks": values,
                # -1: nothing sent to q by this worker; the relay then waits for
                # what its partition held when the marker came.
                "requires_offset": self._last_offset.get(q, -1),
            }
            await self.markers.send(partition=q, value=orjson.dumps(marker))


def install_source_watermarks(app: faust.App, settings: Settings) -> SourceWatermarks | None:
    if settings.ordering != "event_time":
        return None
    source = SourceWatermarks(app, settings)

    @app.timer(settings.watermark_interval_ms / 1000.0, name="emit_watermarks")
    async def emit_watermarks() -> None:
        try:
            await source.tick()
        except Exception:  # the next tick says it again; transactions keep flowing
            log.exception("could not send watermarks")

    return source


class RelayedWatermarks:
    """Velocity's first stage: markers in, per-partition minimum out to the merchant stage."""

    RESEND_S = 1.0  # an unchanged watermark is sent again this often (restarted receivers)

    def __init__(self, app: faust.App, requests_topic: str, by_merchant: faust.TopicT) -> None:
        self.app = app
        self.requests_topic = requests_topic
        self.by_merchant = by_merchant
        self.gates: dict[int, GatedMarkers] = defaultdict(GatedMarkers)
        self.merges: dict[int, WatermarkMerge] = defaultdict(WatermarkMerge)
        self._last_sent: dict[int, tuple[float, float]] = {}

    async def processed(self, partition: int, offset: int) -> None:
        """A request was processed and its forward sent."""
        self.gates[partition].processed_through(offset)
        await self._apply(partition)

    async def marker(self, partition: int, raw: bytes) -> None:
        marker = orjson.loads(raw)
        tp = TP(self.requests_topic, partition)
        required = int(marker["requires_offset"])
        if required < 0:
            try:
                required = (self.app.consumer.highwater(tp) or 0) - 1
            except Exception:
                required = -1
        gate = self.gates[partition]
        committed = committed_offset(self.app, tp)
        if committed is not None:
            gate.processed_through(committed - 1)
        gate.add(required, marker)
        await self._apply(partition)

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.gates.pop(partition, None)
            self.merges.pop(partition, None)
            self._last_sent.pop(partition, None)

    async def _apply(self, partition: int) -> None:
        ready = self.gates[partition].ready()
        if not ready:
            return
        merge = self.merges[partition]
        for marker in ready:
            for source, value in marker["watermarks"].items():
                merge.update(int(source), decode_time(value), int(marker["sources"]))
        current = merge.current()
        if current is None:
            return
        last = self._last_sent.get(partition)
        now = time.monotonic()
        if last is not None and last[0] == current and now - last[1] < self.RESEND_S:
            return
        self._last_sent[partition] = (current, now)
        senders = await partition_count(self.app, self.requests_topic)
        value = orjson.dumps(
            {MARKER: {"sender": partition, "senders": senders, "time_ms": encode_time(current)}}
        )
        for m in range(await partition_count(self.app, self.by_merchant.get_topic_name())):
            await self.by_merchant.send(partition=m, value=value)


class OrderedAcks:
    """Acknowledge by hand, in offset order per topic partition.

    A message not yet acknowledged is not committed: after a crash or a
    rebalance it is read again, not lost. Each acknowledgement goes out once
    every message before it in its partition is done: Faust commits up to the
    first run of acknowledged offsets and does not check that the run starts
    where the last commit ended, so an acknowledgement past a held message
    would commit it.
    """

    def __init__(self) -> None:
        self.ack: Callable[[Any], Awaitable[Any]] | None = None  # the stream's, or the caller's
        # Per topic partition, the messages read and not yet acknowledged, in offset order.
        self._unacked: dict[TP, deque[list]] = defaultdict(deque)

    def track(self, event: Any, tp: TP | None = None) -> list:
        """Call for every message, in the order read; returns its entry for ``done``.

        ``event`` is what ``ack`` is given: an event, or whatever the caller
        acknowledges by (the decision keeps only the message); ``tp`` its
        partition, if ``event`` is not an event.
        """
        entry = [event, False, event.message.tp if tp is None else tp]
        self._unacked[entry[2]].append(entry)
        return entry

    async def done(self, entry: list) -> None:
        entry[1] = True
        unacked = self._unacked.get(entry[2])
        assert self.ack is not None, "set to the stream's ack before the first event"
        while unacked and unacked[0][1]:
            await self.ack(unacked.popleft()[0])

    def revoke(self, tps: set[TP]) -> None:
        """Forget revoked partitions: their next owner reads their messages again."""
        for tp in tps:
            self._unacked.pop(tp, None)


class OrderedMerchantStage:
    """Velocity's merchant stage: hold, then score in (event time, transaction_id) order.

    A held event is not acknowledged until it is scored (``OrderedAcks``), so
    after a crash it is read again, not lost. A revoked partition's held events
    are dropped here, and its new owner reads them again.
    """

    def __init__(self, score: Callable[[dict, int], Awaitable[None]]) -> None:
        self.score = score
        self.acks = OrderedAcks()  # its ``ack`` is set to the stream's
        self.buffers: dict[int, EventTimeBuffer[tuple[list, dict, int]]] = defaultdict(
            EventTimeBuffer
        )
        self.merges: dict[int, WatermarkMerge] = defaultdict(WatermarkMerge)

    def held(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    async def on_event(self, event: faust.EventT, forward: dict, time_ms: int) -> bool:
        """Hold a transaction; True when it came behind what was already released."""
        partition = event.message.partition
        entry = self.acks.track(event)
        tx_id = forward["request"]["transaction"]["transaction_id"]
        late = self.buffers[partition].push(time_ms, tx_id, (entry, forward, time_ms))
        await self._release(partition, None)
        return late

    async def on_marker(self, event: faust.EventT, marker: dict) -> None:
        partition = event.message.partition
        merge = self.merges[partition]
        merge.update(int(marker["sender"]), decode_time(marker["time_ms"]), int(marker["senders"]))
        await self.passed(event)
        current = merge.current()
        if current is not None:
            await self._release(partition, current)

    async def passed(self, event: faust.EventT) -> None:
        """A message that needs no holding (a marker, a copy, an unreadable one)."""
        await self.acks.done(self.acks.track(event))

    async def _release(self, partition: int, watermark: float | None) -> None:
        for entry, forward, time_ms in self.buffers[partition].release(watermark):
            await self.score(forward, time_ms)
            await self.acks.done(entry)

    def revoke(self, tps: set[TP]) -> None:
        self.acks.revoke(tps)
        for partition in {tp.partition for tp in tps}:
            dropped = self.buffers.pop(partition, None)
            self.merges.pop(partition, None)
            if dropped is not None and len(dropped):
                log.info(
                    "partition %d revoked: %d held transactions left to its next owner",
                    partition,
                    len(dropped),
                )
