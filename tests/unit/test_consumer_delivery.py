"""How the consumer hands a message to Faust's conductor: eagerly, and as before once it blocks."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP, Message
from mode import Service
from mode.utils.locks import Event

from agents.batches import RawSchema, input_topic
from agents.consumer import Consumer, Producer, deliver_eagerly
from agents.topics import SERVICES
from apps.factory import make_app
from apps.services import create_service_app
from apps.settings import Settings


class Recorder:
    def __init__(self):
        self.blocked = 0

    def wait_blocked(self, rest):
        self.blocked += 1
        return rest


async def test_a_callback_that_does_not_wait_runs_to_its_end_without_a_task():
    done = []
    tasks_before = len(asyncio.all_tasks())

    async def callback():
        done.append(len(asyncio.all_tasks()))

    recorder = Recorder()
    await deliver_eagerly(callback(), recorder.wait_blocked)
    assert done == [tasks_before]
    assert recorder.blocked == 0


async def test_a_callback_that_waits_is_finished_by_the_waiter_with_what_it_was_sent():
    gate = asyncio.get_running_loop().create_future()
    seen = []

    async def callback():
        seen.append("before")
        seen.append(await gate)
        await asyncio.sleep(0)  # a bare yield after the first wait
        seen.append("after")

    recorder = Recorder()
    delivery = asyncio.ensure_future(deliver_eagerly(callback(), recorder.wait_blocked))
    await asyncio.sleep(0.01)
    assert seen == ["before"] and not delivery.done()
    gate.set_result("opened")
    await delivery
    assert seen == ["before", "opened", "after"]
    assert recorder.blocked == 1


async def test_an_error_is_raised_to_the_consumer_whether_or_not_the_callback_waited():
    async def fails_at_once():
        raise ValueError("at once")

    async def fails_later():
        await asyncio.sleep(0.001)
        raise ValueError("later")

    with pytest.raises(ValueError, match="at once"):
        await deliver_eagerly(fails_at_once(), Recorder().wait_blocked)
    with pytest.raises(ValueError, match="later"):
        await deliver_eagerly(fails_later(), Recorder().wait_blocked)


async def test_a_blocked_delivery_is_abandoned_when_the_flow_is_suspended():
    """What Faust's wait_first(callback, suspend_flow.wait()) did, kept for the blocked case."""
    service = Service()
    await service.start()
    suspend_flow = Event()
    never = asyncio.get_running_loop().create_future()
    cleaned_up = []

    async def callback():
        try:
            await never
        finally:
            cleaned_up.append(True)

    def unless_suspended(rest):
        return service.wait_first(rest, suspend_flow.wait())

    delivery = asyncio.ensure_future(deliver_eagerly(callback(), unless_suspended))
    await asyncio.sleep(0.01)
    assert not delivery.done()
    suspend_flow.set()
    await asyncio.wait_for(delivery, timeout=2)
    await asyncio.sleep(0)  # the abandoned rest is cancelled in wait_first's cleanup
    assert cleaned_up == [True]
    await service.stop()


def test_every_service_app_on_kafka_uses_this_consumer_and_producer(tmp_path):
    settings = Settings(broker="kafka://127.0.0.1:9", data_dir=tmp_path, web_port=8081)
    app = make_app("profile", settings)
    assert isinstance(app.consumer, Consumer)
    assert isinstance(app.producer, Producer)


async def test_the_conductor_waits_for_the_producer_buffer_only_above_its_limit(tmp_path):
    settings = Settings(broker="kafka://127.0.0.1:9", data_dir=tmp_path, web_port=8081)
    buffer = make_app("profile", settings).producer.buffer
    flushed = []

    async def flush_atmost(n: int) -> int:  # Faust's wait flushes through this
        flushed.append(len(buffer.pending._queue))
        while len(buffer.pending._queue) > n:
            buffer.pending.get_nowait()
        return 0

    buffer.flush_atmost = flush_atmost
    for i in range(buffer.max_messages):
        buffer.pending.put_nowait(i)
    await buffer.wait_until_ebb()  # at the limit: nothing to wait for
    assert flushed == []
    buffer.pending.put_nowait("one more")
    await buffer.wait_until_ebb()  # above it: Faust's own wait, which flushes
    assert flushed == [buffer.max_messages + 1]
    assert len(buffer.pending._queue) == buffer.max_messages


@pytest.mark.parametrize("service", SERVICES)
def test_every_agent_reads_its_topics_raw(tmp_path, service):
    settings = Settings(
        broker="kafka://127.0.0.1:9",
        data_dir=tmp_path,
        web_port=8081,
        ordering="event_time",  # the most topics: velocity's watermarks too
    )
    app = create_service_app(service, settings)
    channels = [agent.channel for agent in app.agents.values()]
    assert channels
    for channel in channels:
        assert isinstance(channel.schema, RawSchema), channel


async def test_the_raw_schema_makes_the_event_from_the_message_as_it_came(tmp_path):
    settings = Settings(broker="kafka://127.0.0.1:9", data_dir=tmp_path, web_port=8081)
    app = make_app("profile", settings)
    topic = input_topic(app, "agent.profile.requests")
    tp = TP("agent.profile.requests", 1)
    message = Message(
        tp.topic, 1, 7, 1.5, 0, [("h", b"1")], b"k", b"\xff not json", None, 1, 10, tp
    )
    event = await topic.decode(message)
    assert (event.key, event.value, event.headers, event.message) == (
        b"k",
        b"\xff not json",
        {"h": b"1"},
        message,
    )
