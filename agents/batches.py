"""An agent's input in batches, read beside Faust's per-event stream.

Faust's stream hands an agent one event at a time, and for each it yields to
the event loop, calls the sensors on the way in and on the way out and
acknowledges it. The scoring agents' own work is 30-45 µs per request; with
that machinery around it a request cost a service 1-2 ms of CPU. ``batches``
takes what the conductor already delivered to the agent's channel straight
from its queue, up to ``max_events`` at a time, and does for each event only
what the stream must:

- an event fetched before the last rebalance (an older generation), or while
  flow control is suspended, is skipped and acknowledged, as the stream does;
- every event is tracked as unacknowledged before it is handled, so a
  rebalance or a shutdown waits for it, and acknowledged after the batch, so
  the offset is committed only once its sends are flushed (Faust flushes the
  producer before every commit);
- the stream's processors run on each value, a ``Skip`` skips the event;
- ``current(event)`` makes it the current event, which tells a table write
  the partition of its changelog.

Faust's per-event stream metrics (``<service>_events*``) and its per-message
sensor (``on_message_in``, whose gauge of active messages only ``on_message_out``
would bring down again) do not count these events; ``riskstream_batch_seconds``
and ``riskstream_batch_events`` time and count the batches instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import faust
from faust.events import Event
from faust.exceptions import Skip
from faust.types import Message
from mode.utils.futures import maybe_async


class RawSchema(faust.Schema):
    """Keys and values as the bytes they came as: the event is made straight from the message.

    The services read bytes and parse them themselves (a bad value is a dead
    letter, not a crash), so Faust's decoding through its serializer registry
    only copies the bytes across: 7 µs per message here, against under 1 µs
    for making the event.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: faust.App, **_: object) -> Callable:  # type: ignore[override]
        async def decode(message: Message, *, propagate: bool = False) -> Event:
            return Event(app, message.key, message.value, message.headers, message)

        return decode


def input_topic(app: faust.App, *names: str) -> faust.TopicT:
    """A topic an agent reads in batches: raw keys and values, decoded by ``RawSchema``."""
    return app.topic(*names, schema=RawSchema())


class Batches:
    def __init__(
        self,
        stream: faust.StreamT,
        max_events: int,
        observe: Callable[[int, float], None],
        *,
        acks: bool = True,
    ) -> None:
        """``observe(messages, seconds)`` is told of every batch handled (``Metrics.batches``).

        ``acks=False``: the caller acknowledges each event itself (``event.ack()``).
        """
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.stream = stream
        self.max_events = max_events
        self.observe = observe
        self.acks = acks
        self.app = stream.app

    def current(self, event: faust.EventT | None) -> None:
        """Table writes from now on go to ``event``'s partition of their changelog (None: none)."""
        self.stream._set_current_event(event)  # type: ignore[attr-defined]

    def each(self, batch: list[faust.EventT]) -> Iterator[faust.EventT]:
        """The batch's events, each made current while the caller handles it."""
        for event in batch:
            self.current(event)
            yield event

    def _live(self, event: faust.EventT) -> bool:
        app = self.app
        return (
            app.flow_control.is_active()
            and event.message.generation_id == app.consumer_generation_id
        )

    async def _processed(self, event: faust.EventT) -> bool:
        """Run the stream's processors (``add_processor``) on the value; False if one skips it.

        They are run for what they do (``agent.test_context()`` records the
        values it was given with one); the batch holds the events as they came.
        """
        value = event.value
        try:
            for processor in self.stream._processors:  # type: ignore[attr-defined]
                value = await maybe_async(processor(value))
        except Skip:
            return False
        return True

    async def __aiter__(self) -> AsyncIterator[list[faust.EventT]]:
        await self.stream.maybe_start()
        queue = self.stream.channel.queue  # type: ignore[attr-defined]
        unacked = self.app.consumer._unacked_messages
        acks_enabled_for = self.app.topics.acks_enabled_for
        while not self.stream.should_stop:
            try:
                taken = [await queue.get()]
            except StopAsyncIteration:  # the channel was closed: the agent stops
                return
            while len(taken) < self.max_events and not queue.empty():
                taken.append(queue.get_nowait())
            batch = []
            processed = self._processed if self.stream._processors else None  # type: ignore[attr-defined]
            for event in taken:
                message = event.message
                if not self._live(event) or (processed and not await processed(event)):
                    event.ack()  # as the stream does: a skipped event is not lag
                    continue
                if not message.tracked and acks_enabled_for(message.topic):
                    message.tracked = True
                    unacked.add(message)  # what consumer.track_message does, less its sensors
                batch.append(event)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                yield batch
            finally:
                self.current(None)
            self.observe(len(batch), time.perf_counter() - started)
            if self.acks:
                for event in batch:
                    event.ack()
            await asyncio.sleep(0)  # let the consumer and the producer run between batches
