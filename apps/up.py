"""`riskstream up`: the broker (embedded unless --broker), topics, five services, live output."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import time
from collections import Counter

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console

from agents import topics
from apps.broker import EmbeddedBroker, port_is_free
from apps.kafka import create_topics, produce
from apps.security import aiokafka_auth
from apps.settings import DEFAULT_WEB_PORTS, Settings, load_settings
from apps.supervisor import Supervisor

SUMMARY_INTERVAL_S = 2.0


def run_up(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # the live view is the output
    settings = load_settings(**({"broker": args.broker} if args.broker else {}))
    broker: EmbeddedBroker | None = None
    run_dir = settings.data_dir / ("embedded" if not args.broker else "external")
    if not args.broker:
        # The embedded broker keeps nothing across restarts, so neither may we.
        shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    ports = {s: DEFAULT_WEB_PORTS[s] - 6066 + args.port_base for s in topics.SERVICES}
    busy = [f"{s}:{p}" for s, p in ports.items() if not port_is_free("127.0.0.1", p)]
    if busy:
        console.print(f"[red]riskstream up: web ports in use: {', '.join(busy)} (try --port-base)")
        return 1
    supervisor: Supervisor | None = None
    try:
        if not args.broker:
            broker = EmbeddedBroker(port=args.broker_port, log_path=run_dir / "logs" / "broker.log")
            broker.start()
        settings = settings.model_copy(
            update={"broker": broker.url if broker else settings.broker, "data_dir": run_dir}
        )
        created = asyncio.run(create_topics(settings))
        console.print(f"topics: {len(created)} created on {settings.bootstrap_servers}")
        supervisor = Supervisor(settings, run_dir / "logs")
        for service in topics.SERVICES:
            supervisor.start(service, ports[service])
        supervisor.wait_ready(timeout_s=args.ready_timeout)
        console.print("ready", style="bold green")
        console.print(f"broker {settings.bootstrap_servers}")
        for sp in supervisor.services.values():
            console.print(f"{sp.name:<13} {sp.url}")
        console.print(f"logs {run_dir / 'logs'}")
        return asyncio.run(_live(settings, supervisor, args, console))
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        console.print(f"[red]riskstream up: {exc}")
        return 1
    finally:
        console.print("stopping services ...")
        if supervisor is not None:
            supervisor.stop_all()
        if broker is not None:
            broker.stop()
        console.print("stopped")


async def _live(
    settings: Settings, supervisor: Supervisor, args: argparse.Namespace, console: Console
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = LiveStats()
    expected: set[str] = set()  # transaction ids the feed expects a decision for
    feed_done = asyncio.Event()

    async def feed() -> None:
        try:
            if args.demo:
                from agents.demo import DemoConfig, generate_messages

                config = DemoConfig(transactions=args.demo_transactions, malformed_every=50)

                def messages():
                    for key, value, tag in generate_messages(config):
                        if tag is None:
                            expected.add(orjson.loads(value)["transaction_id"])
                        yield key, value

                await produce(
                    settings, messages(), rate=args.demo_rate, on_sent=stats.sent, stop=stop
                )
            if args.replay:
                from agents.files import read_transactions
                from apps.replay import file_messages

                await produce(
                    settings,
                    file_messages(read_transactions(args.replay)),
                    rate=args.demo_rate if args.demo else 0.0,
                    on_sent=stats.sent,
                    stop=stop,
                )
        finally:
            feed_done.set()

    async def watch_processes() -> None:
        while not stop.is_set():
            for sp in supervisor.services.values():
                if not sp.alive():
                    console.print(f"[red]{sp.name} exited; last log lines:\n{sp.log_tail()}")
                    stop.set()
                    stats.failed = True
            await asyncio.sleep(1.0)

    async def summarise() -> None:
        last = None
        while not stop.is_set():
            await asyncio.sleep(SUMMARY_INTERVAL_S)
            progress = (stats.produced, len(stats.decided), sum(stats.dead_letters.values()))
            if progress != last:  # quiet while nothing moves
                console.print(stats.summary(), style="cyan")
                last = progress
            if args.exit_after_demo and feed_done.is_set() and expected <= stats.decided_tx:
                stop.set()

    tasks = [
        asyncio.create_task(feed()),
        asyncio.create_task(_follow(settings, stats, console, args.quiet, stop)),
        asyncio.create_task(watch_processes()),
        asyncio.create_task(summarise()),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    console.print(stats.summary(), style="bold cyan")
    return 1 if stats.failed else 0


class LiveStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.produced = 0
        self.outcomes: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.decided: set[str] = set()
        self.decided_tx: set[str] = set()
        self.failed = False

    def sent(self, n: int) -> None:
        self.produced = n

    def decision(self, d: dict) -> bool:
        if d["analysis_id"] in self.decided:
            return False
        self.decided.add(d["analysis_id"])
        self.decided_tx.add(d["transaction_id"])
        self.outcomes[d["outcome"]] += 1
        self.latencies_ms.append(float(d["latency_ms"]))
        return True

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        lat = sorted(self.latencies_ms[-5000:])

        def pct(p: float) -> str:
            return f"{lat[min(len(lat) - 1, int(p * len(lat)))]:.0f}ms" if lat else "-"

        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "none"
        dlq = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items())) or "none"
        return (
            f"[{elapsed:6.1f}s] produced {self.produced} | decided {len(self.decided)} "
            f"({len(self.decided) / elapsed:.0f}/s; {outcomes}) | "
            f"latency p50 {pct(0.5)} p99 {pct(0.99)} | dlq: {dlq}"
        )


async def _follow(
    settings: Settings, stats: LiveStats, console: Console, quiet: bool, stop: asyncio.Event
) -> None:
    """Print decisions worth a look and every dead letter, as they happen."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **aiokafka_auth(settings),
    )
    await consumer.start()
    try:
        # No group: assign every partition, so there is no join to wait for.
        parts = [
            TopicPartition(t, p)
            for t in (topics.DECISIONS, topics.DEAD_LETTERS)
            for p in range(settings.partitions)
        ]
        consumer.assign(parts)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    body = orjson.loads(m.value)
                    if tp.topic == topics.DEAD_LETTERS:
                        stats.dead_letters[body["reason"]] += 1
                        if not quiet:
                            console.print(
                                f"[magenta]DLQ[/] {body['reason']:<22} "
                                f"{body['source']['topic']}/{body['source']['partition']}@{body['source']['offset']} "
                                f"{body['error'][:90]}"
                            )
                    elif stats.decision(body) and not quiet and body["outcome"] != "approve":
                        console.print(_decision_line(body))
    finally:
        await consumer.stop()


def _decision_line(d: dict) -> str:
    color = {"decline": "red", "review": "yellow"}.get(d["outcome"], "green")
    reasons = "; ".join(f"{r['code']}: {r['detail']}" for r in d["reasons"][:3])
    missing = f" missing={','.join(d['missing_agents'])}" if d["missing_agents"] else ""
    return (
        f"[{color}]{d['outcome'].upper():<7}[/] {d['transaction_id']:<11} {d['account_id']:<10} "
        f"score {d['score']:.2f} {d['latency_ms']:.0f}ms {reasons}{missing}"
    )
