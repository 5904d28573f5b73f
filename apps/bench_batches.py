"""`riskstream bench --batch-costs`: what one service spends per batch and per message, by input rate.

Paced, a transaction costs the pipeline two to four times what it costs as fast
as possible. This mode shows where that comes from, one service at a time: the
service runs alone on a fresh embedded broker, fed its own input topics (as
``--state-size`` feeds them, apps/bench_state.py) at a few steady rates, and
for each rate it reads

- the service's CPU (``/proc``) and the broker's, in cores;
- the batches the service handled and the messages in them, from its own
  ``riskstream_batch_events`` histogram (every agent reports each batch there);
- so the CPU per message and per batch.

Idle (rate 0) it only polls. A batch carries whatever one poll returned, so at
a low rate most batches hold a message or two, and what a batch costs
whatever it holds (the poll, the changelog flush, the producer request and its
answer, the acknowledgements) is paid per message.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents import topics
from apps.bench import DataSource, cpu_time_s, librdkafka_producer, write_report
from apps.bench import say as say_line
from apps.bench_state import inputs_for, service_alone
from apps.settings import Settings

RATES = (0.0, 100.0, 300.0, 1000.0)
QUICK_RATES = (0.0, 100.0, 1000.0)
BATCH_METRIC = "riskstream_batch_events"
# Messages a service handles per input message: velocity handles each transaction
# twice, by account and then by merchant.
HANDLED_PER_INPUT = {"velocity": 2}


def handled(web_port: int) -> tuple[float, float]:
    """(batches, messages) the service has handled so far, over all its agents."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    batches = messages = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != BATCH_METRIC:
            continue
        for sample in family.samples:
            if sample.name == BATCH_METRIC + "_count":
                batches += sample.value
            elif sample.name == BATCH_METRIC + "_sum":
                messages += sample.value
    return batches, messages


def interleaved(service: str, n: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """n input messages for the service as the pipeline would send them: (topic, key, value).

    The decision service gets each analysis's request and its three results one
    after another, so that joins complete as they go.
    """
    per_message = 4 if service == "decision" else 1  # a request and three results
    raw = DataSource(accounts=1000, seed=seed).batch(f"b{seed}-", -(-n // per_message))
    by_topic: dict[str, list[tuple[str, bytes, bytes]]] = {}
    for topic, messages in inputs_for(service, raw):
        by_topic.setdefault(topic, []).extend((topic, key, value) for _, key, value in messages)
    return [m for row in zip(*by_topic.values(), strict=True) for m in row][:n]


def produce_at(producer: Any, messages: list[tuple[str, bytes, bytes]], rate: float) -> None:
    start = time.perf_counter()
    for i, (topic, key, value) in enumerate(messages):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the load generator could not deliver its messages")


def wait_handled(web_port: int, target: float, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while handled(web_port)[1] < target:
        if cpu_time_s(pid) is None:
            raise RuntimeError("the service exited during the measurement")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not handle its input within {timeout_s:.0f}s")
        time.sleep(0.05)


async def measure_service(
    service: str,
    rates: tuple[float, ...],
    window_s: float,
    base: Settings,
    work: Path,
    say: Any,
) -> dict[str, Any]:
    async with service_alone(service, base, work / service) as alone:
        pid, broker_pid, web_port = alone.service.pid, alone.pids["broker"], alone.web_port
        assert pid is not None and broker_pid is not None
        producer = librdkafka_producer(alone.settings.bootstrap_servers, alone.settings)
        await asyncio.sleep(2.0)  # past the first commits and metadata refreshes
        rows = []
        for i, rate in enumerate(rates):
            messages = interleaved(service, int(rate * window_s), seed=11 + i) if rate else []
            cpu0, broker0 = cpu_time_s(pid) or 0.0, cpu_time_s(broker_pid) or 0.0
            batches0, handled0 = await asyncio.to_thread(handled, web_port)
            t0 = time.monotonic()
            if messages:
                await asyncio.to_thread(produce_at, producer, messages, rate)
                target = handled0 + len(messages) * HANDLED_PER_INPUT.get(service, 1)
                await asyncio.to_thread(wait_handled, web_port, target, pid, 60.0)
            else:
                await asyncio.sleep(window_s)
            elapsed = time.monotonic() - t0
            cpu = (cpu_time_s(pid) or 0.0) - cpu0
            broker_cpu = (cpu_time_s(broker_pid) or 0.0) - broker0
            batches1, handled1 = await asyncio.to_thread(handled, web_port)
            batches, n = batches1 - batches0, handled1 - handled0
            rows.append(
                {
                    "rate": rate,
                    "seconds": round(elapsed, 2),
                    "messages": int(n),
                    "service_cores": round(cpu / elapsed, 3),
                    "batches_per_s": round(batches / elapsed, 1),
                    "messages_per_batch": round(n / batches, 1) if batches else None,
                    "ms_per_message": round(cpu / n * 1000, 3) if n else None,
                    "ms_per_batch": round(cpu / batches * 1000, 2) if batches else None,
                    "broker_cores": round(broker_cpu / elapsed, 3),
                }
            )
            say(f"{service} at {rate:g}/s: {rows[-1]['service_cores']} cores")
        del producer  # closed while its broker still runs
        return {"pids": alone.pids, "rates": rows}


async def measure_all(
    services: list[str], rates: tuple[float, ...], window_s: float, base: Settings, say: Any
) -> dict[str, Any]:
    report: dict[str, Any] = {"window_s": window_s, "services": {}}
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-batches-") as tmp:
        for service in services:
            report["services"][service] = await measure_service(
                service, rates, window_s, base, Path(tmp), say
            )
    return report


def run_batch_bench(args: Any, settings: Settings) -> int:
    """The --batch-costs mode of `riskstream bench`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    rates, window_s = (QUICK_RATES, 3.0) if args.quick else (RATES, 10.0)
    services = args.state_services or list(topics.SERVICES)
    say = functools.partial(say_line, console)
    report = asyncio.run(measure_all(services, rates, window_s, settings, say))
    for service, result in report["services"].items():
        table = Table(title=f"{service} alone: its input at a steady rate (messages/s)")
        for column in result["rates"][0]:
            table.add_column(column.replace("_", " "), justify="right")
        for row in result["rates"]:
            table.add_row(*("-" if v is None else f"{v:,}" for v in row.values()))
        console.print(table)
    if args.json is not None:
        write_report(console, args.json, report)
    return 0
