"""`riskstream bench --without-faust`: one service's work with Faust and without it.

How much of what a service costs per message is its own work, and how much
the framework around it? Each of three processes runs alone on a fresh
embedded broker, is handed the same N analysis requests as fast as they can
be produced (one for each of N new accounts, as ``--state-size`` feeds the
profile service), and answers all of them:

- ``profile service``: the profile service itself (``riskstream worker profile``);
- ``profile without Faust``: the same work on plain aiokafka (``python -m
  apps.bench_baseline profile``): the same ``score_request`` over the same rows
  in RocksDB, the same changelog and result messages, one record batch per
  partition, a consumer group and commits, and nothing of Faust;
- ``raw relay``: each request copied to an output topic (the floor of one hop).

For each: requests answered per second, and the CPU per request of the
process and of the broker, from the first produce until every answer is in
and 2 s more (the last changelog writes and commits). The answers of the
service and of the version without Faust are compared: the same score,
reasons and features for every request.
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

import orjson

from agents import topics
from apps.bench import (
    Baseline,
    Collector,
    baseline_topics,
    cpu_time_s,
    create_extra_topics,
    librdkafka_producer,
    produce_paced,
    start_baseline,
    stop_process,
    topic_message_counts,
    write_report,
)
from apps.bench import say as say_line
from apps.bench_state import (
    fresh_broker,
    inputs_for,
    measure_service,
    new_accounts,
    wait_for_output,
)
from apps.settings import Settings

SERVICE = "profile"
SOURCE, SINK = "bench.bare.in", "bench.bare.out"
# (name, bench_baseline kind): the service's work without Faust, and the floor of a hop.
WITHOUT = (("profile_without_faust", "profile"), ("raw_relay", "relay"))
STALL_S = 60.0


def requests_for(prefix: str, n: int) -> list[tuple[str, bytes, bytes]]:
    """N analysis requests for the profile agent, one for each of N new accounts."""
    ((_, requests),) = inputs_for(SERVICE, new_accounts(n, prefix))
    return requests


def parse_answer(value: bytes) -> tuple[str, dict[str, Any]]:
    """An agent result's transaction_id, and what it says: score, reasons, features."""
    body = orjson.loads(value)
    return body["transaction_id"], {k: body.get(k) for k in ("score", "reasons", "features")}


async def answers(settings: Settings, topic: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """What each answer on ``topic`` says, by transaction_id, read from the start until
    every id in ``ids`` is answered or nothing new came for 10 s."""
    wanted = set(ids)
    collector = await Collector(settings, topic, parse_answer, from_start=True).start()
    try:
        await collector.wait_for(wanted, idle_s=10.0)
    finally:
        await collector.stop()
    return {i: info for i, (_, info) in collector.seen.items() if i in wanted}


async def measure_without(
    name: str,
    kind: str,
    requests: list[tuple[str, bytes, bytes]],
    base: Settings,
    work: Path,
    say: Any,
) -> dict[str, Any]:
    """One of ``WITHOUT`` alone on a fresh broker, handed the requests; stopped by its pid."""
    n = len(requests)
    async with fresh_broker(base, work / name) as (broker, settings):
        app_id = f"bench-bare-{kind}"
        await create_extra_topics(
            settings, baseline_topics(kind, SOURCE, SINK, app_id, settings.partitions)
        )
        process = start_baseline(
            settings, name, kind, source=SOURCE, sink=SINK, app_id=app_id, compat=False, work=work
        )
        try:
            pid, broker_pid = process.process.pid, broker.process.pid
            producer = librdkafka_producer(settings.bootstrap_servers, settings)
            # Ready once a probe comes out: it has its partitions.
            await produce_paced(producer, SOURCE, requests_for("probe-", 1), 0.0)
            producer.flush(30)
            await ready(settings, process)
            say(f"{name}: {n} requests ...")
            cpu0, broker0, t0 = (
                cpu_time_s(pid) or 0.0,
                cpu_time_s(broker_pid) or 0.0,
                time.monotonic(),
            )
            await produce_paced(producer, SOURCE, requests, 0.0)
            producer.flush(60)
            del producer  # closed while its broker still runs
            done, t_end = await wait_for_output(settings, SINK, n + 1, pid, STALL_S)
            await asyncio.sleep(2.0)  # as for the service: the last writes and commits
            process.raise_if_exited()
            result = {
                "pids": {"process": pid, "broker": broker_pid},
                "outputs": done - 1,
                "cpu_s": (cpu_time_s(pid) or 0.0) - cpu0,
                "broker_cpu_s": (cpu_time_s(broker_pid) or 0.0) - broker0,
                "elapsed_s": t_end - t0,
            }
            if kind == "profile":
                result["answers"] = await answers(settings, SINK, [i for i, _, _ in requests])
            return result
        finally:
            stop_process(process.process)


async def ready(settings: Settings, process: Baseline, timeout_s: float = 180.0) -> None:
    """Wait for the probe to come out of ``process``; raise if it exits first."""
    deadline = time.monotonic() + timeout_s
    while (await topic_message_counts(settings, [SINK]))[SINK] < 1:
        process.raise_if_exited()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not answer a probe in {timeout_s:.0f}s")
        await asyncio.sleep(0.5)


def per_request(result: dict[str, Any], n: int) -> dict[str, Any]:
    """Rate and CPU per request of one measurement."""
    elapsed = result["elapsed_s"]
    return {
        "outputs": result["outputs"],
        "per_s": round(result["outputs"] / elapsed, 1) if elapsed > 0 else None,
        "cpu_ms_per_request": round(1000 * result["cpu_s"] / n, 4),
        "broker_cpu_ms_per_request": round(1000 * result["broker_cpu_s"] / n, 4),
    }


def differing(with_faust: dict[str, dict], without: dict[str, dict]) -> list[str]:
    """The transaction ids whose answers differ (or that only one of the two answered)."""
    ids = with_faust.keys() | without.keys()
    return sorted(i for i in ids if with_faust.get(i) != without.get(i))


async def measure_all(n: int, base: Settings, say: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"requests": n, "runs": {}, "pids": {}}
    with tempfile.TemporaryDirectory(prefix="riskstream-bench-without-faust-") as tmp:
        work = Path(tmp)

        # What measure_service hands the service (bench_state.new_accounts), as requests.
        requests = requests_for("state-", n)
        ids = [i for i, _, _ in requests]

        async def service_answers(settings: Settings) -> dict[str, dict[str, Any]]:
            return await answers(settings, topics.results_topic(SERVICE), ids)

        service = await measure_service(SERVICE, n, base, work, say, STALL_S, service_answers)
        report["runs"]["profile_service"] = per_request(service, n)
        report["pids"]["profile_service"] = service["pids"]
        without: dict[str, Any] = {}
        for name, kind in WITHOUT:
            without[name] = await measure_without(name, kind, requests, base, work, say)
            report["runs"][name] = per_request(without[name], n)
            report["pids"][name] = without[name]["pids"]
    bare = without["profile_without_faust"]["answers"]
    report["answers_compared"] = len(service["collected"])
    report["answers_differing"] = differing(service["collected"], bare)
    report["differences"] = {  # the first few, both ways
        i: {"with_faust": service["collected"].get(i), "without_faust": bare.get(i)}
        for i in report["answers_differing"][:5]
    }
    return report


def run_without_faust_bench(args: Any, settings: Settings) -> int:
    """The --without-faust mode of `riskstream bench`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # each count's consumer says hello
    n = 2000 if args.quick else 20_000
    say = functools.partial(say_line, console)
    report = asyncio.run(measure_all(n, settings, say))
    table = Table(title=f"the profile agent's work, alone, {n:,} requests as fast as possible")
    for column in ("", "answered", "per s", "CPU ms per request", "broker CPU ms per request"):
        table.add_column(column, justify="right")
    for name, row in report["runs"].items():
        table.add_row(name.replace("_", " "), *(f"{v:,}" for v in row.values()))
    console.print(table)
    bad = report["answers_differing"]
    console.print(
        f"answers compared: {report['answers_compared']:,}, differing: {len(bad)}"
        + (f" (first: {bad[:5]})" if bad else "")
    )
    if args.json is not None:
        write_report(console, args.json, report)
    complete = all(row["outputs"] >= n for row in report["runs"].values())
    return 0 if complete and not bad else 1
