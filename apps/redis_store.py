"""The Redis read model of decisions: written behind the decision, read before the table.

Keys (both with the configured TTL):
    riskstream:decision:{analysis_id}        -> the Decision JSON
    riskstream:transaction:{transaction_id}  -> analysis_id

Writes are SETs of the same value for the same key, so a redelivery or a retry
is harmless. They happen off the decision path: a decision is queued and a
background writer stores it, retrying with backoff while Redis is away, so a
Redis outage never holds a decision back. The queue is bounded; what overflows
it is counted and remains readable from the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DECISION_KEY = "riskstream:decision:{}"
TRANSACTION_KEY = "riskstream:transaction:{}"
BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class RedisDecisions:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        timeout_ms: int,
        queue_max: int,
        registry: CollectorRegistry,
    ) -> None:
        timeout = timeout_ms / 1000.0
        self.client = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.ttl_s = ttl_s
        self.queue: deque[dict[str, Any]] = deque()
        self.queue_max = queue_max
        self.wakeup = asyncio.Event()
        self.writes = Counter(
            "riskstream_redis_writes", "Decisions written to Redis", registry=registry
        )
        self.errors = Counter(
            "riskstream_redis_errors", "Failed Redis operations", ("operation",), registry=registry
        )
        self.dropped = Counter(
            "riskstream_redis_dropped",
            "Decisions not written to Redis because the queue was full",
            registry=registry,
        )
        self.backlog = Gauge(
            "riskstream_redis_queue", "Decisions waiting to be written to Redis", registry=registry
        )

    def put(self, decision: dict[str, Any]) -> None:
        """Queue a decision for Redis; never blocks, never raises."""
        if len(self.queue) >= self.queue_max:
            self.queue.popleft()
            self.dropped.inc()
        self.queue.append(decision)
        self.backlog.set(len(self.queue))
        self.wakeup.set()

    async def run_writer(self) -> None:
        """Drain the queue forever; while Redis fails, back off and keep the queue."""
        failures = 0
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            batch = [self.queue[i] for i in range(min(len(self.queue), 500))]
            try:
                await self._write(batch)
            except (RedisError, OSError) as exc:
                self.errors.labels("write").inc()
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning(
                        "redis write failed (%d times), retrying in %.1fs: %r", failures, delay, exc
                    )
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("redis writes recovered after %d failures", failures)
            failures = 0
            for _ in batch:
                self.queue.popleft()
            self.writes.inc(len(batch))
            self.backlog.set(len(self.queue))

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for d in batch:
                pipe.set(DECISION_KEY.format(d["analysis_id"]), orjson.dumps(d), ex=self.ttl_s)
                pipe.set(
                    TRANSACTION_KEY.format(d["transaction_id"]), d["analysis_id"], ex=self.ttl_s
                )
            await pipe.execute()

    async def by_analysis(self, analysis_id: str) -> bytes | None:
        try:
            return await self.client.get(DECISION_KEY.format(analysis_id))
        except (RedisError, OSError):
            self.errors.labels("read").inc()
            return None

    async def close(self) -> None:
        await self.client.aclose()
