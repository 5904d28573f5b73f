"""Faust's Kafka consumer, handing each fetched message on without a task per message.

Faust's consumer loop delivers every message with
``wait_first(callback(message), suspend_flow.wait())``: four tasks created
(the callback, the flow event, the service's stopped and crashed events),
three of them cancelled again, for a callback that almost always finishes
without waiting. On this machine that costs 27 µs per message, more than a
scoring agent's whole work on a request. Worse, it yields to the event loop
for every message, so an agent waiting on its channel woke up for each one and
its batch (agents/batches.py) held a single message: every per-batch cost, the
changelog flush, the producer request, the acknowledgement, was paid per
message.

``Consumer`` runs the callback eagerly instead: its coroutine is stepped in
the consumer's own task, and only if it has to wait (flow control during a
rebalance, a full producer buffer, a full channel) is the rest of it handed
to ``wait_first`` as before, so a rebalance can still suspend a blocked
delivery. The loop is otherwise Faust's own (faust-streaming 0.15.3), with
``asyncio.sleep(0)`` for its yield after each poll (the service's ``sleep(0)``
makes and cancels a task of its own).

Two more things Faust did per message are done per poll or skipped when they
change nothing: the end offset of a partition (a Prometheus gauge behind a
label lookup) is tracked once per partition and poll, and the conductor's
handler for a partition is looked up directly while the conductor's lock is
free (its callback takes the lock for every message only to do that lookup;
while the lock is held, during a subscription change, the callback is used).

``Producer`` is installed with it for one check the conductor makes before
every message it hands on: whether the producer's buffer is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from mode import Service


class _Started:
    """Awaits the rest of a coroutine that was already stepped once and yielded ``first``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        to_yield = self.first
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like: the coroutine decides
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def deliver_eagerly(
    coro: Coroutine[Any, Any, Any],
    wait_blocked: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> None:
    """Run ``coro`` here until it finishes; if it has to wait, ``wait_blocked`` awaits the rest."""
    try:
        first = coro.send(None)
    except StopIteration:
        return
    await wait_blocked(_Started(coro, first))


class Consumer(aiokafka_driver.Consumer):
    def _messages(
        self, records: Any, active_partitions: set[TP] | None, generation_id: int
    ) -> Iterator[tuple[TP, Message]]:
        """Faust's getmany over one poll, less its per-message work that is per partition.

        Each record is checked as it is handed on, as in Faust: the flow still
        active, the generation unchanged, the partition still active. The end
        offset of a partition (a Prometheus gauge behind a label lookup, which
        Faust set for every message) is tracked once per partition and poll:
        it is the same for every record of the poll.
        """
        to_message = self._to_message
        buffered = self._buffered_partitions
        app = self.app
        tracked: set[TP] = set()
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active:
                break
            if app.consumer_generation_id != generation_id:
                self.log.dev("Generation id changed from %r. Cancelling getmany.", generation_id)
                break
            if active_partitions is None or tp in active_partitions or tp in buffered:
                if tp not in tracked:
                    tracked.add(tp)
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def _poll(self, timeout: float) -> Iterator[tuple[TP, Message]]:
        """Faust's getmany: the records of one poll, as Message objects, lazily."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return iter(())
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return iter(())
        return self._messages(records, active_partitions, generation_id)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        callback = self.callback
        poll = self._poll
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        conductor = self.app.topics
        callbacks = conductor._tp_to_callback
        callbacks_changing = conductor._tp_to_callback_lock.locked

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspend_flow = self.suspend_flow

        def unless_suspended(rest: Awaitable[Any]) -> Awaitable[Any]:
            return self.wait_first(rest, suspend_flow.wait())

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                await sleep(0)
                if not self.should_stop:
                    for tp, message in await poll(1.0):
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # The conductor's own callback takes its lock for each
                            # message to look up the partition's handler; while the
                            # lock is free that is this lookup, without the lock.
                            handler = None if callbacks_changing() else callbacks.get(tp)
                            delivery = (handler or callback)(cast(Message, message))
                            await deliver_eagerly(delivery, unless_suspended)
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


def committed_offset(app: Any, tp: TP) -> int | None:
    """The consumer's committed offset (the next to read) of ``tp``, if known.

    Faust keeps it privately; it is what the group resumes from after a restart,
    so everything before it was processed by an earlier run.
    """
    offset: int | None = app.consumer._committed_offset.get(tp)
    return offset


def read_to_end(
    app: Any, tp: TP, next_offset: int | None, *, as_of_ms: int | None = None
) -> bool | None:
    """Whether this worker has handled everything in ``tp`` up to its high watermark.

    ``next_offset``: the offset after the last message it handled there (None:
    none); the committed offset counts as well. With ``as_of_ms`` (epoch ms),
    the high watermark must also have come with a fetch at or after that
    time, so that what was written before then is below it: a partition whose
    fetched records were all handled has an older one until its next fetch.
    None when it cannot tell: the partition was not fetched yet, or is not
    this worker's.
    """
    try:
        highwater = app.consumer.highwater(tp)
        fetched_ms = (
            None
            if as_of_ms is None
            else app.consumer._thread._ensure_consumer().last_poll_timestamp(tp)
        )
    except Exception:  # not assigned, or the consumer is not running
        return None
    if highwater is None:
        return None
    if as_of_ms is not None and (fetched_ms is None or fetched_ms < as_of_ms):
        return False
    return max(next_offset or 0, committed_offset(app, tp) or 0) >= highwater


class Producer(aiokafka_driver.Producer):
    """Faust's producer, with its buffer's check before each message delivered made cheap.

    The conductor awaits ``producer.buffer.wait_until_ebb()`` for every message
    it hands on, which reads the buffer's size through ``app.conf`` (a
    settings registry behind its own ``__getattribute__``): 3 % of the
    decision's samples at full speed. Unthreaded, the size is the length of
    the buffer's queue; only above ``max_messages`` is Faust's own wait
    (which flushes) called, as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.app.conf.producer_threaded:
            buffer = self.buffer
            faust_wait = buffer.wait_until_ebb

            async def wait_until_ebb() -> None:
                if len(buffer.pending._queue) > buffer.max_messages:
                    await faust_wait()

            buffer.wait_until_ebb = wait_until_ebb  # type: ignore[method-assign]


def install(app: Any) -> None:
    """Make ``app`` create this consumer and producer (on Kafka; another transport keeps its own)."""
    transport = app.transport
    if isinstance(transport, aiokafka_driver.Transport):
        transport.Consumer = Consumer
        transport.Producer = Producer
