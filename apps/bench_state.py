"""`riskstream bench --state-size N`: each service's memory with N accounts in its state.

The whole pipeline cannot be filled that far on the embedded broker (it keeps
every message in memory and slows down as it fills), and a service's state
does not depend on the others: so each service runs alone, in turn, on a fresh
broker, fed its own input topics directly:

- orchestrator: one raw transaction for each of N new accounts on ``transactions``;
- velocity, profile, geo: the analysis request the orchestrator would send for
  each of those transactions, on ``agent.<name>.requests``;
- decision: that analysis request and one result of every agent (score 0, no
  reasons), a thousand analyses at a time, in ``wait_for_all`` mode so that no
  deadline decides before a result is read.

It waits until the service's output topic holds N messages and reads the
service's peak RSS (VmHWM), its CPU time and the size of its data dir. Every
process it starts is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agents import topics
from agents.contracts import AGENT_NAMES, now_rfc3339
from agents.fanout import fan_out
from agents.results import agent_result
from agents.validation import parse_transaction
from apps.bench import (
    TARGET_RSS_ACCOUNTS,
    TARGET_RSS_MB,
    DataSource,
    cpu_time_s,
    librdkafka_producer,
    peak_rss_mb,
    produce_paced,
    topic_message_counts,
    write_report,
)
from apps.bench import say as say_line
from apps.broker import EmbeddedBroker, free_port
from apps.settings import Settings
from apps.supervisor import ServiceProcess, Supervisor

CHUNK = 1000  # analyses fed to the decision service at a time
OUTPUT = {
    "orchestrator": topics.DECISION_REQUESTS,
    **{a: topics.results_topic(a) for a in AGENT_NAMES},
    "decision": topics.DECISIONS,
}


def inputs_for(service: str, raw: list[tuple[str, bytes, bytes]]) -> list[tuple[str, list]]:
    """(topic, [(id, key, value)]) to produce for one service, from raw transactions."""
    if service == "orchestrator":
        return [(topics.TRANSACTIONS, raw)]
    agent_requests, decision_requests = [], []
    results: dict[str, list] = {a: [] for a in AGENT_NAMES}
    requested_at = now_rfc3339()
    for tx_id, key, value in raw:
        tx = parse_transaction(value)
        out = fan_out(
            tx,  # type: ignore[arg-type]
            requested_at=requested_at,
            expected_agents=list(AGENT_NAMES),
            deadline_ms=2000,
        )
        agent_requests.append((tx_id, key, out.agent_request))
        analysis_key = out.analysis_id.encode()
        decision_requests.append((tx_id, analysis_key, out.decision_request))
        if service == "decision":
            request = orjson.loads(out.agent_request)
            for agent in AGENT_NAMES:
                result = agent_result(
                    agent, request, score=0.0, reasons=[], features={}, processed_at=requested_at
                )
                results[agent].append((tx_id, analysis_key, orjson.dumps(result)))
    if service == "decision":
        # In the order the pipeline would send them, a thousand analyses at a time:
        # joins complete as they go, as they do live.
        out = []
        for i in range(0, len(decision_requests), CHUNK):
            out.append((topics.DECISION_REQUESTS, decision_requests[i : i + CHUNK]))
            out += [(topics.results_topic(a), results[a][i : i + CHUNK]) for a in AGENT_NAMES]
        return out
    return [(topics.requests_topic(service), agent_requests)]


def new_accounts(n: int, prefix: str = "state-") -> list[tuple[str, bytes, bytes]]:
    """n raw transactions, each of its own new account (``<prefix><i>``): the same every call."""
    source = DataSource(accounts=1000, seed=11)  # the generator's accounts are replaced
    return source.batch(prefix, n, lambda i, tx: f"{prefix}{i:07d}")


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1024**2


async def wait_for_output(
    settings: Settings, topic: str, n: int, pid: int, stall_s: float
) -> tuple[int, float]:
    """Poll the output topic until it holds n messages; gives up after stall_s without progress."""
    seen, last_progress = 0, time.monotonic()
    while seen < n:
        await asyncio.sleep(1.0)
        count = (await topic_message_counts(settings, [topic]))[topic]
        if count > seen:
            seen, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            break
        if cpu_time_s(pid) is None:
            raise RuntimeError(f"the service exited with {seen} of {n} outputs")
    return seen, time.monotonic()


@dataclass
class Alone:
    """One service running alone on its own fresh embedded broker."""

    settings: Settings
    broker: EmbeddedBroker
    service: ServiceProcess
    web_port: int

    @property
    def pids(self) -> dict[str, int | None]:
        return {
            "service": self.service.pid,
            "broker": self.broker.process.pid if self.broker.process else None,
        }


@contextlib.asynccontextmanager
async def fresh_broker(
    base: Settings, root: Path
) -> AsyncIterator[tuple[EmbeddedBroker, Settings]]:
    """A fresh embedded broker logging to root, and base's settings pointed at it; stopped after.

    The data dir is root/data, removed after; the logs stay.
    """
    root.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port=free_port(), log_path=root / "broker.log")
    broker.start()
    try:
        yield broker, base.model_copy(update={"broker": broker.url, "data_dir": root / "data"})
    finally:
        broker.stop()
        shutil.rmtree(root / "data", ignore_errors=True)


@contextlib.asynccontextmanager
async def service_alone(service: str, base: Settings, root: Path) -> AsyncIterator[Alone]:
    """The service alone on a fresh broker, ready; stopped by its pid, with the broker, after.

    The decision runs in ``wait_for_all`` mode, so that no deadline decides
    before a result is read. Its data dir is removed after; the logs stay.
    """
    async with fresh_broker(base, root) as (broker, settings):
        supervisor: Supervisor | None = None
        try:
            from apps.kafka import create_topics

            await create_topics(settings)
            env = {"RISKSTREAM_DECISION_MODE": "wait_for_all"} if service == "decision" else {}
            supervisor = Supervisor(settings, root / "logs", extra_env=env)
            web_port = free_port()
            sp = supervisor.start(service, web_port)
            await asyncio.to_thread(supervisor.wait_ready, 180.0)
            assert sp.pid is not None
            yield Alone(settings, broker, sp, web_port)
        finally:
            if supervisor is not None:
                supervisor.stop_all()


async def measure_service(
    service: str,
    n: int,
    base: Settings,
    work: Path,
    say: Any,
    stall_s: float,
    collect: Callable[[Settings], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """``collect(settings)``, if given, reads what it wants from the service's broker at the
    end (in ``result["collected"]``), before the broker stops."""
    root = work / service
    async with service_alone(service, base, root) as alone:
        settings, pid = alone.settings, alone.service.pid
        assert pid is not None
        rss_ready = peak_rss_mb(pid)

        raw = new_accounts(n)
        producer = librdkafka_producer(settings.bootstrap_servers, settings)
        broker_pid = alone.pids["broker"]
        cpu0, t0 = cpu_time_s(pid) or 0.0, time.monotonic()
        broker_cpu0 = (cpu_time_s(broker_pid) if broker_pid else None) or 0.0
        say(f"{service}: {n} accounts ...")
        for topic, messages in inputs_for(service, raw):
            await produce_paced(producer, topic, messages, 0.0)
        producer.flush(60)
        del producer  # closed while its broker still runs
        done, t_end = await wait_for_output(settings, OUTPUT[service], n, pid, stall_s)
        elapsed = t_end - t0
        await asyncio.sleep(2.0)  # let the last changelog writes and commits land
        cpu_s = (cpu_time_s(pid) or 0.0) - cpu0
        broker_cpu_s = ((cpu_time_s(broker_pid) if broker_pid else None) or 0.0) - broker_cpu0
        result = {
            "pids": alone.pids,
            "accounts": n,
            "outputs": done,
            "peak_rss_mb": peak_rss_mb(pid),
            "rss_when_ready_mb": rss_ready,
            "cpu_s": cpu_s,
            "broker_cpu_s": broker_cpu_s,
            "elapsed_s": elapsed,
            "per_s": done / elapsed if elapsed > 0 else None,
            "data_dir_mb": dir_size_mb(root / "data"),
            "broker_peak_rss_mb": peak_rss_mb(broker_pid) if broker_pid else None,
        }
        if collect is not None:
            result["collected"] = await collect(settings)
        say(
            f"{service}: {done}/{n} in {elapsed:.0f}s ({result['per_s']:.0f}/s), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, data dir {result['data_dir_mb']:.0f} MB"
        )
        return result


async def run_state_size(
    n: int,
    settings: Settings,
    work: Path,
    say: Any,
    services: list[str] | None = None,
    stall_s: float = 60.0,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for service in services or topics.SERVICES:
        out[service] = await measure_service(service, n, settings, work, say, stall_s)
    return out


def run_state_bench(args: Any, settings: Settings) -> int:
    """The --state-size mode of `riskstream bench`."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    started_at = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="riskstream-bench-state-"))

    say = functools.partial(say_line, console)

    try:
        measured = asyncio.run(
            run_state_size(args.state_size, settings, work, say, args.state_services)
        )
    except (RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]riskstream bench: {exc}; logs kept in {work}")
        return 1
    table = Table(title=f"each service alone, {args.state_size:,} accounts in state")
    for column in (
        "service",
        "outputs",
        "per s",
        "CPU s",
        "RSS ready MB",
        "peak RSS MB",
        "data dir MB",
    ):
        table.add_column(column, justify="right")
    for service, r in measured.items():
        table.add_row(
            service,
            f"{r['outputs']:,}",
            f"{r['per_s']:.0f}",
            f"{r['cpu_s']:.0f}",
            f"{r['rss_when_ready_mb']:.0f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['data_dir_mb']:.0f}",
        )
    console.print(table)
    worst = max(r["peak_rss_mb"] for r in measured.values())
    complete = all(r["outputs"] >= r["accounts"] for r in measured.values())
    met = complete and args.state_size >= TARGET_RSS_ACCOUNTS and worst <= TARGET_RSS_MB
    console.print(
        f"target: peak RSS <= {TARGET_RSS_MB:.0f} MB per service with "
        f"{TARGET_RSS_ACCOUNTS:,} accounts: worst {worst:.0f} MB -> {'met' if met else 'not met'}"
    )
    report = {
        "started_at": started_at.isoformat(),
        "state_size": args.state_size,
        "services": measured,
        "target": {"rss_mb": TARGET_RSS_MB, "accounts": TARGET_RSS_ACCOUNTS, "met": met},
        "settings": {
            "partitions": settings.partitions,
            "block_cache_mb": settings.block_cache_mb,
            "write_buffer_mb": settings.write_buffer_mb,
        },
    }
    json_path = args.json or Path("var/bench") / f"bench-state-{started_at:%Y%m%d-%H%M%S}.json"
    write_report(console, json_path, report)
    if not complete:
        console.print(f"[red]not every service answered every input; logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0
