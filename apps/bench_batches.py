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

The same rates are offered to the bench's two one-stage baselines, each alone
on a fresh broker as well: the raw aiokafka relay (a consumer and a producer on
one event loop, the least a Python hop can do) and the naive Faust agent at the
services' fetch wait. Each service's CPU is also given as a multiple of the
relay's at the same rate. And the machine's own cost of waking a sleeping event
loop is measured first, in process: on a virtual machine it can be most of what
an idle-then-busy process spends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agents import topics
from apps.bench import (
    DataSource,
    baseline_events,
    baseline_topics,
    batches_handled,
    cpu_time_s,
    create_extra_topics,
    librdkafka_producer,
    start_baseline,
    stop_process,
    topic_message_counts,
    write_report,
)
from apps.bench import say as say_line
from apps.bench_state import fresh_broker, inputs_for, service_alone
from apps.settings import Settings

RATES = (0.0, 100.0, 300.0, 1000.0)
QUICK_RATES = (0.0, 100.0, 1000.0)
# Messages a service handles per input message: velocity handles each transaction
# twice, by account and then by merchant.
HANDLED_PER_INPUT = {"velocity": 2}
# The main bench's baselines at the services' fetch wait: (name, kind, compat).
BASELINES = (("aiokafka_relay", "relay", False), ("faust_naive_compat", "naive", True))
BASELINE_SOURCE, BASELINE_SINK = "bench.floor.in", "bench.floor.out"


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


# (batches or None, messages) handled so far
HandledSoFar = Callable[[], Awaitable[tuple[float | None, float]]]


async def wait_count(count: HandledSoFar, target: float, pid: int, timeout_s: float, poll_s: float):
    deadline = time.monotonic() + timeout_s
    while (await count())[1] < target:
        if cpu_time_s(pid) is None:
            raise RuntimeError("the process exited during the measurement")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the input was not handled within {timeout_s:.0f}s")
        await asyncio.sleep(poll_s)


async def measure_rates(
    name: str,
    pid: int,
    broker_pid: int,
    messages_at: Callable[[int, float], list[tuple[str, bytes, bytes]]],
    count: HandledSoFar,
    per_input: int,
    rates: tuple[float, ...],
    window_s: float,
    producer: Any,
    say: Any,
    poll_s: float = 0.05,
) -> list[dict[str, Any]]:
    """Each rate for window_s: the process's and the broker's CPU, what it handled, in how many batches.

    ``count`` says (batches or None, messages) handled so far; a window ends
    when everything offered in it was handled.
    """
    await asyncio.sleep(2.0)  # past the first commits and metadata refreshes
    rows = []
    for i, rate in enumerate(rates):
        messages = messages_at(i, rate) if rate else []
        cpu0, broker0 = cpu_time_s(pid) or 0.0, cpu_time_s(broker_pid) or 0.0
        batches0, handled0 = await count()
        t0 = time.monotonic()
        if messages:
            await asyncio.to_thread(produce_at, producer, messages, rate)
            await wait_count(count, handled0 + len(messages) * per_input, pid, 60.0, poll_s)
        else:
            await asyncio.sleep(window_s)
        elapsed = time.monotonic() - t0
        cpu = (cpu_time_s(pid) or 0.0) - cpu0
        broker_cpu = (cpu_time_s(broker_pid) or 0.0) - broker0
        batches1, handled1 = await count()
        n = handled1 - handled0
        batches = None if batches1 is None or batches0 is None else batches1 - batches0
        rows.append(
            {
                "rate": rate,
                "seconds": round(elapsed, 2),
                "messages": int(n),
                "cores": round(cpu / elapsed, 3),
                "batches_per_s": None if batches is None else round(batches / elapsed, 1),
                "messages_per_batch": round(n / batches, 1) if batches else None,
                "ms_per_message": round(cpu / n * 1000, 3) if n else None,
                "ms_per_batch": round(cpu / batches * 1000, 2) if batches else None,
                "broker_cores": round(broker_cpu / elapsed, 3),
            }
        )
        say(f"{name} at {rate:g}/s: {rows[-1]['cores']} cores")
    return rows


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

        async def count() -> tuple[float | None, float]:
            return await asyncio.to_thread(batches_handled, web_port)

        rows = await measure_rates(
            service,
            pid,
            broker_pid,
            lambda i, rate: interleaved(service, int(rate * window_s), seed=11 + i),
            count,
            HANDLED_PER_INPUT.get(service, 1),
            rates,
            window_s,
            producer,
            say,
        )
        del producer  # closed while its broker still runs
        return {"pids": alone.pids, "rates": rows}


async def measure_baseline(
    name: str,
    kind: str,
    compat: bool,
    rates: tuple[float, ...],
    window_s: float,
    base: Settings,
    work: Path,
    say: Any,
) -> dict[str, Any]:
    """A one-stage baseline alone on a fresh broker, offered the same rates; stopped by its pid.

    What it relayed is counted from its output topic's high-water marks, read
    by a short-lived consumer every 0.2 s while a window drains: a few
    requests more for the broker, in that window's last moments only.
    """
    async with fresh_broker(base, work / name) as (broker, settings):
        app_id = f"bench-floor-{kind}"
        await create_extra_topics(
            settings,
            baseline_topics(kind, BASELINE_SOURCE, BASELINE_SINK, app_id, settings.partitions),
        )
        baseline = start_baseline(
            settings,
            name,
            kind,
            source=BASELINE_SOURCE,
            sink=BASELINE_SINK,
            app_id=app_id,
            compat=compat,
            work=work / name,
        )
        try:
            pid, broker_pid = baseline.process.pid, broker.process.pid
            producer = librdkafka_producer(settings.bootstrap_servers, settings)

            async def count() -> tuple[float | None, float]:
                baseline.raise_if_exited()
                counts = await topic_message_counts(settings, [BASELINE_SINK])
                return None, counts[BASELINE_SINK]

            # Ready when it relays a probe: it has its partitions.
            probe = [(BASELINE_SOURCE, k, v) for _, k, v in baseline_events("p-", 1, 1)]
            await asyncio.to_thread(produce_at, producer, probe, 1.0)
            await wait_count(count, 1, pid, 180.0, 0.5)

            def messages_at(i: int, rate: float) -> list[tuple[str, bytes, bytes]]:
                events = baseline_events(f"f{i}-", int(rate * window_s), 1000)
                return [(BASELINE_SOURCE, key, value) for _, key, value in events]

            rows = await measure_rates(
                name, pid, broker_pid, messages_at, count, 1, rates, window_s, producer, say, 0.2
            )
            del producer  # closed while its broker still runs
            return {"pids": {"baseline": pid, "broker": broker_pid}, "rates": rows}
        finally:
            stop_process(baseline.process)


def wake_cost(wakes: int = 200, sleep_s: float = 0.01) -> dict[str, float]:
    """This thread's CPU per wake of an event loop (uvloop, as the services run) from a short sleep.

    Against the CPU of one turn of the same loop kept busy: the difference is
    what sleeping and waking costs here, whatever the process then does.
    """
    import uvloop

    async def probe() -> dict[str, float]:
        c0 = time.thread_time()
        for _ in range(wakes):
            await asyncio.sleep(sleep_s)
        per_wake = (time.thread_time() - c0) / wakes
        c0 = time.thread_time()
        for _ in range(wakes * 20):
            await asyncio.sleep(0)
        busy = (time.thread_time() - c0) / (wakes * 20)
        return {
            "sleep_ms": sleep_s * 1000,
            "cpu_us_per_wake": round(per_wake * 1e6, 1),
            "cpu_us_per_busy_turn": round(busy * 1e6, 1),
        }

    return uvloop.run(probe())


async def measure_all(
    services: list[str], rates: tuple[float, ...], window_s: float, base: Settings, say: Any
) -> dict[str, Any]:
    report: dict[str, Any] = {"window_s": window_s, "services": {}, "baselines": {}}
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-batches-") as tmp:
        for service in services:
            report["services"][service] = await measure_service(
                service, rates, window_s, base, Path(tmp), say
            )
        for name, kind, compat in BASELINES:
            report["baselines"][name] = await measure_baseline(
                name, kind, compat, rates, window_s, base, Path(tmp), say
            )
    relay = report["baselines"]["aiokafka_relay"]["rates"]
    floor = {row["rate"]: row["cores"] for row in relay}
    for result in [*report["services"].values(), *report["baselines"].values()]:
        for row in result["rates"]:
            relay_cores = floor.get(row["rate"])
            row["x_relay"] = round(row["cores"] / relay_cores, 2) if relay_cores else None
    return report


def run_batch_bench(args: Any, settings: Settings) -> int:
    """The --batch-costs mode of `riskstream bench`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # each count's consumer says hello
    rates, window_s = (QUICK_RATES, 3.0) if args.quick else (RATES, 10.0)
    services = args.state_services or list(topics.SERVICES)
    say = functools.partial(say_line, console)
    wake = wake_cost()
    say(
        f"an event loop here spends {wake['cpu_us_per_wake']:g} µs of CPU per wake from a "
        f"{wake['sleep_ms']:g} ms sleep, {wake['cpu_us_per_busy_turn']:g} µs per turn kept busy"
    )
    report = asyncio.run(measure_all(services, rates, window_s, settings, say))
    report["machine"] = {"event_loop_wake": wake}
    titled = [
        (f"{s} alone: its input at a steady rate (messages/s)", r)
        for s, r in report["services"].items()
    ]
    titled += [(f"baseline {b} alone, the same rates", r) for b, r in report["baselines"].items()]
    for title, result in titled:
        table = Table(title=title)
        for column in result["rates"][0]:
            table.add_column(column.replace("_", " "), justify="right")
        for row in result["rates"]:
            table.add_row(*("-" if v is None else f"{v:,}" for v in row.values()))
        console.print(table)
    if args.json is not None:
        write_report(console, args.json, report)
    return 0
