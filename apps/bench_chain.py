"""`riskstream bench --relay-chain`: the pipeline's longest path made of raw relays.

A transaction's longest way to its decision crosses four services
(orchestrator, velocity's account stage, its merchant stage, the decision) and
then the bench's reader; by the contract's topics alone it is three (the
orchestrator, an agent, the decision; ``--chain-hops 3``). Here each is the
bench's raw aiokafka relay (apps/bench_baseline.py: a consumer and a producer
on one event loop, no parsing, no state, no commits), chained through topics
on a fresh embedded broker, and the bench's paced load goes in at the front.
What comes out is the least this shape can cost and the best latency it can
have on this machine and broker, whatever the services do: if raw relays miss
a latency target here, no implementation of the services meets it here.

The relays and the reader use the services' fetch wait
(``RISKSTREAM_FETCH_MAX_WAIT_MS``), so the floor can be measured at another wait
as well. Every process is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agents.benchstats import latency_summary, match_times, throughput
from apps.bench import (
    Baseline,
    Collector,
    baseline_events,
    cpu_time_s,
    create_extra_topics,
    librdkafka_producer,
    parse_baseline,
    probe_through,
    produce_paced,
    start_baseline,
    stop_process,
    write_report,
)
from apps.bench import say as say_line
from apps.bench_state import fresh_broker
from apps.settings import Settings

RATES = (100.0, 500.0, 0.0)


def chain_topics(hops: int) -> list[str]:
    return [f"bench.chain.{i}" for i in range(hops + 1)]


def _check(relays: list[Baseline]) -> None:
    for relay in relays:
        relay.raise_if_exited()


async def measure_chain(
    hops: int, rates: tuple[float, ...], n: int, base: Settings, work: Path, say: Any
) -> dict[str, Any]:
    async with fresh_broker(base, work) as (broker, settings):
        relays: list[Baseline] = []
        collector: Collector | None = None
        try:
            from aiokafka.admin import NewTopic

            names = chain_topics(hops)
            topics = [NewTopic(t, settings.partitions, 1) for t in names]
            await create_extra_topics(settings, topics)
            for i in range(hops):
                relays.append(
                    start_baseline(
                        settings,
                        f"relay_{i + 1}",
                        "relay",
                        source=names[i],
                        sink=names[i + 1],
                        app_id=f"chain-{i + 1}",
                        compat=False,
                        work=work,
                    )
                )
            producer = librdkafka_producer(settings.bootstrap_servers, settings)
            collector = await Collector(settings, names[-1], parse_baseline).start()
            check = functools.partial(_check, relays)
            await probe_through(producer, collector, names[0], check, "the relay chain")
            pids = {r.name: r.process.pid for r in relays}
            pids["broker"] = broker.process.pid
            runs = []
            for i, rate in enumerate(rates):
                runs.append(await _run(i, rate, n, producer, collector, names[0], relays, pids))
                lat = runs[-1]["latency_ms"]
                say(
                    f"{hops} relays at {rate:g}/s: {runs[-1]['per_s']:,}/s, "
                    f"p50 {lat['p50'] or 0:.1f} ms, p99 {lat['p99'] or 0:.1f} ms"
                )
            del producer  # closed while its broker still runs
            return {
                "hops": hops,
                "fetch_max_wait_ms": settings.fetch_max_wait_ms,
                "pids": pids,
                "runs": runs,
            }
        finally:
            if collector is not None:
                await collector.stop()
            for relay in relays:
                stop_process(relay.process)


async def _run(
    i: int,
    rate: float,
    n: int,
    producer: Any,
    collector: Collector,
    first: str,
    relays: list[Baseline],
    pids: dict[str, int],
) -> dict[str, Any]:
    """n events at rate into the chain: how many came out, how fast, how late, at what CPU."""
    events = baseline_events(f"c{i}-", n, 1000)
    cpu0 = {name: cpu_time_s(pid) or 0.0 for name, pid in pids.items()}
    produced = await produce_paced(producer, first, events, rate)
    missing = await collector.wait_for(
        produced, idle_s=30.0, check=functools.partial(_check, relays)
    )
    matched = match_times(produced, collector.times())
    elapsed = (matched.last_consume_s or time.perf_counter()) - (matched.first_produce_s or 0.0)
    cpu = {name: (cpu_time_s(pid) or 0.0) - cpu0[name] for name, pid in pids.items()}
    relay_cpu = sum(v for k, v in cpu.items() if k != "broker")
    per_s = throughput(matched.matched, matched.first_produce_s, matched.last_consume_s)
    return {
        "rate": rate,
        "transactions": len(produced),
        "lost": missing,
        "per_s": round(per_s, 1),
        "latency_ms": latency_summary(matched.latencies_ms),
        "relays_cores": round(relay_cpu / elapsed, 3),
        "broker_cores": round(cpu["broker"] / elapsed, 3),
        "cpu_ms_per_transaction": round(
            1000 * (relay_cpu + cpu["broker"]) / max(1, matched.matched), 3
        ),
    }


def run_chain_bench(args: Any, settings: Settings) -> int:
    """The --relay-chain mode of `riskstream bench`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    if args.chain_hops < 1:
        raise SystemExit("riskstream bench: --chain-hops must be at least 1")
    rates = tuple(args.rates) if args.rates else RATES
    n = 500 if args.quick else 3000
    say = functools.partial(say_line, console)
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-chain-") as tmp:
        report = asyncio.run(measure_chain(args.chain_hops, rates, n, settings, Path(tmp), say))
    table = Table(
        title=f"{report['hops']} raw relays in a chain, fetch wait {report['fetch_max_wait_ms']} ms"
    )
    for column in ("offered/s", "relayed/s", "lost", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for column in ("relays cores", "broker cores", "CPU ms/tx"):
        table.add_column(column, justify="right")
    for run in report["runs"]:
        lat = run["latency_ms"]
        table.add_row(
            "max" if run["rate"] == 0 else f"{run['rate']:g}",
            f"{run['per_s']:,}",
            str(run["lost"]),
            *(f"{lat[k]:.1f}" if lat[k] is not None else "-" for k in ("p50", "p95", "p99")),
            f"{run['relays_cores']}",
            f"{run['broker_cores']}",
            f"{run['cpu_ms_per_transaction']}",
        )
    console.print(table)
    if args.json is not None:
        write_report(console, args.json, report)
    return 0
