"""Agent tier: one service's agent in `test_context()` with a memory store.

Events are put straight into the agent (no consumer group, no join), while what
the agent sends goes through the app's real producer to the embedded broker, so
the test reads real output topics instead of mocks.
"""

from __future__ import annotations

import pytest

from apps.broker import EmbeddedBroker, free_port
from apps.kafka import create_topics
from apps.settings import Settings


@pytest.fixture
def broker(tmp_path):
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log").start()
    yield broker
    broker.stop()


@pytest.fixture
async def settings(broker, tmp_path):
    settings = Settings(
        broker=broker.url,
        store="memory://",
        data_dir=tmp_path / "data",
        partitions=2,
        web_port=free_port(),
        deadline_ms=300,
    )
    await create_topics(settings)
    return settings


class Harness:
    """Drives one agent of an app: put(raw, key, partition) and read outputs."""

    def __init__(self, app, agent_name: str):
        self.app = app
        self.agent = app.agents[agent_name]

    async def __aenter__(self):
        self.app.finalize()
        await self.app.producer.start()
        self.ctx = self.agent.test_context()
        self.running = await self.ctx.__aenter__()
        return self

    async def __aexit__(self, *exc):
        await self.ctx.__aexit__(*exc)
        await self.app.producer.flush()
        await self.app.producer.stop()

    async def put(
        self,
        value: bytes | None,
        key: bytes | None = None,
        partition: int = 0,
        topic: str | None = None,
        headers: dict[str, bytes] | None = None,
        wait: bool = True,
    ):
        """Deliver one message to the agent; `topic` names which of its topics it came on.

        The wrapper numbers offsets itself, one sequence across partitions. With
        ``wait=False`` messages queue up, and a batching agent takes them together.
        """
        if topic is not None:
            # Messages are stamped with the name of `original_channel`.
            self.running.original_channel = self.app.topic(topic)
        return await self.running.put(
            value, key=key, partition=partition, headers=headers, wait=wait
        )

    async def flush(self):
        await self.app.producer.flush()
