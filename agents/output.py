"""Sending to a topic straight through the app's producer, not through Faust's ``Topic.send``.

Every value the services send is bytes they encoded themselves, and every key
is bytes, so Faust's layer (its serializers, ``FutureMessage`` with its
callbacks, the send sensors) adds nothing; here it cost about 60 µs of CPU per
message against 15 µs for the producer alone. Faust flushes the producer
before it commits offsets, so what an event made is in the broker before the
event's offset is committed, as with ``Topic.send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import faust

log = logging.getLogger(__name__)


class Output:
    def __init__(self, app: faust.App, topic: str) -> None:
        self.app = app
        self.topic = topic

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None,
        headers: Mapping[str, bytes] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future:
        """Hands the message to the producer; the future is its RecordMetadata once written."""
        sent: asyncio.Future = await self.app.producer.send(  # type: ignore[assignment]
            self.topic,
            key,
            value,
            partition,
            None,
            list(headers.items()) if headers else None,
        )
        sent.add_done_callback(self._failed)
        return sent

    def _failed(self, sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            log.error("could not send to %s: %r", self.topic, sent.exception())
