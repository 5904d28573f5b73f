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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import Message
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
    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

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
                ait = getmany(timeout=1.0)
                await sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
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
                            await deliver_eagerly(
                                callback(cast(Message, message)), unless_suspended
                            )
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


def install(app: Any) -> None:
    """Make ``app`` create this consumer (on Kafka; another transport keeps its own)."""
    transport = app.transport
    if isinstance(transport, aiokafka_driver.Transport):
        transport.Consumer = Consumer
