"""Plain Kafka clients (aiokafka) for the CLI: topic creation and producing."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents import topics
from apps.security import aiokafka_auth
from apps.settings import Settings

log = logging.getLogger(__name__)


def topic_plan(settings: Settings) -> list[NewTopic]:
    """Every topic with the configured partitions; changelogs are compacted.

    Source topics and table changelogs must agree on partition count
    (Faust raises PartitionsMismatch otherwise), so all share one count.
    """
    plain = topics.contract_topics() + topics.internal_topics()
    compacted = topics.changelog_topics()
    rf = settings.replication_factor
    return [NewTopic(t, settings.partitions, rf) for t in plain] + [
        NewTopic(t, settings.partitions, rf, topic_configs={"cleanup.policy": "compact"})
        for t in compacted
    ]


async def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create what is missing; returns the names created. Existing topics are kept."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **aiokafka_auth(settings)
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_plan(settings) if t.name not in existing]
        created = []
        for new in missing:
            try:
                await admin.create_topics([new])
                created.append(new.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


def producer(settings: Settings, **kw: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        **aiokafka_auth(settings),
        **kw,
    )


async def produce(
    settings: Settings,
    messages,  # Iterable[tuple[bytes | None, bytes]]: (key, value)
    *,
    topic: str = topics.TRANSACTIONS,
    rate: float = 0.0,
    on_sent=None,  # Callable[[int], None], called with the running count
    stop: asyncio.Event | None = None,
) -> int:
    """Produce (key, value) pairs, paced at `rate` per second (0: as fast as possible).

    Pacing is against the start time, not per message, so a slow moment is caught
    up instead of lowering the rate for the rest of the run.
    """
    loop = asyncio.get_running_loop()
    client = producer(settings)
    await client.start()
    sent = 0
    try:
        start = loop.time()
        pending = []
        for key, value in messages:
            if stop is not None and stop.is_set():
                break
            if rate > 0:
                delay = start + sent / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await client.send(topic, value, key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if on_sent is not None:
                on_sent(sent)
        await client.flush()
        await asyncio.gather(*pending)
    finally:
        await client.stop()
    return sent
