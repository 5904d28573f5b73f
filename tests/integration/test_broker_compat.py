"""What the embedded broker gets wrong, and that our workaround puts it right."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from apps.broker import EmbeddedBroker, free_port
from apps.compat import fetched_end_offsets


def test_end_offsets_are_taken_from_a_fetch_when_the_listed_ones_fall_short(tmp_path):
    async def scenario(bootstrap: str) -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
        await producer.start()
        # Five records in one batch, then three in another: the end is offset 8.
        for burst in (5, 3):
            await asyncio.gather(
                *[await producer.send("t", b"x", partition=0) for _ in range(burst)]
            )
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        tp = TopicPartition("t", 0)
        listed = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        fixed = await fetched_end_offsets(bootstrap, {tp: listed})
        return listed, fixed[tp]

    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log") as broker:
        listed, fixed = asyncio.run(scenario(broker.bootstrap))
    assert fixed == 8
    assert listed <= fixed  # the embedded broker lists 6 (base offset of the last batch + 1)


def test_empty_partitions_need_no_fetch(tmp_path):
    tp = TopicPartition("empty", 0)
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log") as broker:
        assert asyncio.run(fetched_end_offsets(broker.bootstrap, {tp: 0})) == {tp: 0}
