"""`riskstream bench --broker-costs`: what the embedded broker costs per request, and one hop's latency.

On this kind of machine the broker shares two cores with the five services, so
its CPU per request sets how much is left for them. Three measurements, each
on its own fresh embedded broker, with plain aiokafka clients (no Faust):

- **idle fetches**: seven consumers (one per consumer the pipeline runs:
  five services, velocity's two stages counted once, and the bench's reader)
  on the 4 partitions of an empty topic, at several fetch waits. The broker's
  CPU, the fetch requests the consumers sent, and so the CPU per fetch;
- **produce requests**: one producer at a steady rate, each request carrying 1,
  10 or 50 messages of 500 bytes; the broker's CPU per request and per message;
- **one hop**: a producer at 20/s and 500/s and a consumer on the same
  topic, latency from the message's timestamp to its arrival, at fetch waits of
  20 and 5 ms, and the fetch requests per second that cost.

The broker's CPU is read from ``/proc/<pid>/stat`` around each window.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.benchstats import percentile
from apps.bench import cpu_time_s
from apps.broker import EmbeddedBroker, free_port
from apps.kafka import create_topics
from apps.settings import Settings

TOPIC = "transactions"
PARTITIONS = 4
CONSUMERS = 7
FETCH_API_KEY = 1  # Kafka's Fetch request


def _cpu_s(pid: int) -> float:
    cpu = cpu_time_s(pid)
    if cpu is None:
        raise RuntimeError("the embedded broker exited during the measurement")
    return cpu


class _Fetches:
    """Counts the fetch requests a consumer's client sends."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.n = 0
        client = consumer._client
        send = client.send

        async def counted(node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(request, "API_KEY", None) == FETCH_API_KEY:
                self.n += 1
            return await send(node_id, request, *args, **kwargs)

        client.send = counted


async def _on_fresh_broker(work: Path, measure: Callable[[EmbeddedBroker], Awaitable[Any]]) -> Any:
    broker = EmbeddedBroker(port=free_port(), log_path=work / "broker.log").start()
    try:
        settings = Settings(broker=broker.url, data_dir=work / "data", partitions=PARTITIONS)
        await create_topics(settings)
        return await measure(broker)
    finally:
        broker.stop()


async def _consumer(broker: EmbeddedBroker, wait_ms: int) -> tuple[AIOKafkaConsumer, _Fetches]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait_ms
    )
    await consumer.start()
    consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    await consumer.seek_to_end()
    return consumer, _Fetches(consumer)


async def idle_fetches(broker: EmbeddedBroker, wait_ms: int, window_s: float) -> dict[str, Any]:
    clients = [await _consumer(broker, wait_ms) for _ in range(CONSUMERS)]

    async def poll(consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getmany(timeout_ms=1000)

    tasks = [asyncio.create_task(poll(c)) for c, _ in clients]
    try:
        await asyncio.sleep(1.0)  # fetchers running
        pid = broker.process.pid  # type: ignore[union-attr]
        cpu0, fetches0, t0 = _cpu_s(pid), sum(f.n for _, f in clients), time.monotonic()
        await asyncio.sleep(window_s)
        elapsed = time.monotonic() - t0
        cpu, fetches = _cpu_s(pid) - cpu0, sum(f.n for _, f in clients) - fetches0
    finally:
        for task in tasks:
            task.cancel()
        for consumer, _ in clients:
            await consumer.stop()
    return {
        "fetch_wait_ms": wait_ms,
        "consumers": CONSUMERS,
        "broker_cores": round(cpu / elapsed, 3),
        "fetches_per_s": round(fetches / elapsed),
        "broker_ms_per_fetch": round(cpu / max(fetches, 1) * 1000, 3),
    }


async def produce_requests(
    broker: EmbeddedBroker, per_request: int, rate: float, window_s: float
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=1, acks=-1)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"warm", key=b"warm")
        pid = broker.process.pid  # type: ignore[union-attr]
        cpu0, t0, sent = _cpu_s(pid), time.monotonic(), 0
        while time.monotonic() - t0 < window_s:
            batch = producer.create_batch()
            for i in range(per_request):
                batch.append(key=b"k%d" % (sent + i), value=b"v" * 500, timestamp=None)
            await (await producer.send_batch(batch, TOPIC, partition=sent % PARTITIONS))
            sent += per_request
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - t0
        cpu = _cpu_s(pid) - cpu0
    finally:
        await producer.stop()
    requests = sent / per_request
    return {
        "messages_per_request": per_request,
        "messages_per_s": round(sent / elapsed),
        "broker_cores": round(cpu / elapsed, 3),
        "broker_ms_per_request": round(cpu / requests * 1000, 3),
        "broker_ms_per_message": round(cpu / sent * 1000, 4),
    }


async def one_hop(
    broker: EmbeddedBroker, rate: float, wait_ms: int, window_s: float
) -> dict[str, Any]:
    consumer, fetches = await _consumer(broker, wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=1, acks=-1)
    await producer.start()
    latencies: list[float] = []

    async def produce() -> None:
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < window_s:
            await producer.send(TOPIC, b"v" * 500, key=b"k%d" % i)
            i += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    try:
        await asyncio.sleep(1.0)
        fetches0, t0 = fetches.n, time.monotonic()
        sending = asyncio.create_task(produce())
        while not sending.done() or time.monotonic() - t0 < window_s + 0.5:
            records = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            latencies += [now_ms - m.timestamp for ms in records.values() for m in ms]
            if time.monotonic() - t0 > window_s + 1.0:
                break
        await sending
        elapsed = time.monotonic() - t0
    finally:
        await producer.stop()
        await consumer.stop()
    latencies.sort()
    return {
        "rate": rate,
        "fetch_wait_ms": wait_ms,
        "messages": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "fetches_per_s": round((fetches.n - fetches0) / elapsed),
    }


async def measure_all(work: Path, window_s: float) -> dict[str, list[dict[str, Any]]]:
    report: dict[str, list[dict[str, Any]]] = {"idle_fetches": [], "produce": [], "one_hop": []}
    for wait_ms in (5, 20, 200):
        report["idle_fetches"].append(
            await _on_fresh_broker(work, lambda b, w=wait_ms: idle_fetches(b, w, window_s))
        )
    for per_request, rate in ((1, 500), (10, 500), (50, 2000)):
        report["produce"].append(
            await _on_fresh_broker(
                work, lambda b, n=per_request, r=rate: produce_requests(b, n, r, window_s)
            )
        )
    for rate, wait_ms in ((20, 20), (500, 20), (20, 5), (500, 5)):
        report["one_hop"].append(
            await _on_fresh_broker(
                work, lambda b, r=rate, w=wait_ms: one_hop(b, r, w, max(window_s, 3.0))
            )
        )
    return report


def run_broker_bench(json_path: Any = None, *, window_s: float = 5.0) -> int:
    from rich.console import Console
    from rich.table import Table

    from apps.bench import write_report

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    with tempfile.TemporaryDirectory(prefix="riskstream-broker-bench-") as tmp:
        report = asyncio.run(measure_all(Path(tmp), window_s))
    tables = {
        "idle_fetches": "the embedded broker, idle, 7 consumers of 4 partitions each",
        "produce": "the embedded broker, one producer, messages of 500 bytes",
        "one_hop": "one hop: producer -> broker -> consumer",
    }
    for key, title in tables.items():
        rows = report[key]
        table = Table(title=title)
        for column in rows[0]:
            table.add_column(column.replace("_", " "), justify="right")
        for row in rows:
            table.add_row(
                *(f"{v:,}" if isinstance(v, int | float) else str(v) for v in row.values())
            )
        console.print(table)
    if json_path is not None:
        write_report(console, json_path, report)
    return 0
