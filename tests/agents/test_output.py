"""Output.send_many against the embedded broker: where each message lands, and in what order."""

from __future__ import annotations

import faust
import pytest

from agents.output import Output
from tests.kafka_helpers import read_topic

TOPIC = "agent.profile.results"  # any topic create_topics made, with settings.partitions


def _app(settings, **conf) -> faust.App:
    app = faust.App(
        "output-test", broker=settings.broker, store="memory://", producer_acks=-1, **conf
    )
    app.finalize()
    return app


async def _keyed_partitions(app: faust.App, keys: list[bytes]) -> dict[bytes, int]:
    """Where the producer's own send puts each key."""
    return {key: app.producer.key_partition(TOPIC, key).partition for key in keys}


@pytest.mark.parametrize("max_batch_size", [16384, 1024])  # 1 KiB: several batches a partition
async def test_each_message_lands_where_send_puts_its_key_in_order(settings, max_batch_size):
    app = _app(settings, producer_max_batch_size=max_batch_size)
    await app.producer.start()
    try:
        out = Output(app, TOPIC)
        keys = [f"acct-{i % 37}".encode() for i in range(300)]
        messages = [(key, f"{i}".encode() * 20, None) for i, key in enumerate(keys)]
        messages.append((None, b"to partition 1", 1))
        sent = await out.send_many(messages)
        await app.producer.flush()
        expected = await _keyed_partitions(app, keys)
    finally:
        await app.producer.stop()

    got = await read_topic(settings.bootstrap_servers, TOPIC, settings.partitions, until=301)
    assert len(got) == 301
    for message in got:
        if message.key is not None:
            assert message.partition == expected[message.key], message.key
    # Per partition, in the order given.
    for partition in range(settings.partitions):
        given = [
            value
            for key, value, p in messages
            if (p if p is not None else expected[key]) == partition
        ]
        assert [m.value for m in got if m.partition == partition] == given
    # Each batch says where its last message was written.
    last = {}
    for batch in sent:
        written = await batch
        last[written.partition] = max(last.get(written.partition, -1), written.offset)
    for partition, offset in last.items():
        assert offset == max(m.offset for m in got if m.partition == partition)
    if max_batch_size == 1024:
        assert len(sent) > settings.partitions  # it did split


async def test_one_message_and_none_at_all(settings):
    app = _app(settings)
    await app.producer.start()
    try:
        out = Output(app, TOPIC)
        assert await out.send_many([]) == []
        [one] = await out.send_many([(b"acct-1", b"only", None)])
        written = await one
        expected = (await _keyed_partitions(app, [b"acct-1"]))[b"acct-1"]
    finally:
        await app.producer.stop()
    assert written.partition == expected
    got = await read_topic(settings.bootstrap_servers, TOPIC, settings.partitions, until=1)
    assert [(m.partition, m.offset, m.value) for m in got] == [(expected, written.offset, b"only")]


async def test_a_message_with_neither_key_nor_partition_is_refused(settings):
    app = _app(settings)
    await app.producer.start()
    try:
        with pytest.raises(ValueError, match="needs a key or a partition"):
            await Output(app, TOPIC).send_many([(b"k", b"v", None), (None, b"v", None)])
    finally:
        await app.producer.stop()
