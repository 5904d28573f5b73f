"""Baselines for `riskstream bench`: what one stage costs on this broker and machine.

Two one-stage relays from a source topic to a sink topic, each a process:

- ``naive``: a minimal Faust app with Faust's default settings: one agent over a
  Record value, one table update (a running total per account) and one send
  per event. Only what it needs to run beside the services is set: the broker
  URL, the partition count of the pre-created topics (a table's changelog must
  match its source), group timeouts as the services use them (Faust's defaults
  make a join take about 30 s), its own data dir and a free web port on
  127.0.0.1. The store stays Faust's default (``memory://``) and the consumer
  keeps Faust's hard-coded 1500 ms fetch wait unless ``--compat`` applies
  ``apps.compat.configure`` with ``RISKSTREAM_FETCH_MAX_WAIT_MS``.
- ``relay``: plain aiokafka, no framework: consume every partition of the
  source (assigned, no group) and produce each message to the sink with the
  same key. Fetch wait ``RISKSTREAM_FETCH_MAX_WAIT_MS``, linger
  ``RISKSTREAM_PRODUCER_LINGER_MS``, acks all, like the services.

And one that is not a relay:

- ``profile``: the profile service's work on plain aiokafka, without Faust:
  a consumer in a group (``--app-id``), for every request the same
  ``score_request`` as the service (agents/account_agent.py) over the same
  tables' rows in RocksDB (one database per partition, as Faust keeps them),
  each batch's rows written as one write batch per partition with their
  changelog messages (topics ``<app-id>-accounts-changelog`` and
  ``<app-id>-results-changelog``) and the results as one record batch per
  partition (``agents.output.send_batches``), offsets committed every 2.8 s
  (Faust's default) after the producer is flushed. What it leaves out of the
  service: Faust (its consumer thread, conductor, events, acks, table
  recovery and standbys, web server, timers) and the Prometheus metrics.
  Its input is what the orchestrator sends the profile service.

Input and output values of the relays are JSON objects ``{"id", "account", "amount"}``; the
output keeps ``id`` so the bench can match it (Faust adds its ``__faust`` field).

Run: ``python -m apps.bench_baseline naive|relay|profile [--source T] [--sink T]`` with
``RISKSTREAM_BROKER``, ``RISKSTREAM_PARTITIONS``, ``RISKSTREAM_DATA_DIR`` and
``RISKSTREAM_WEB_PORT`` in the environment. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from apps.settings import Settings, load_settings

SOURCE = "bench.baseline.in"
SINK = "bench.baseline.out"


def create_naive_app(settings: Settings, *, app_id: str, source: str, sink: str, compat: bool):
    import faust

    if compat:
        from apps import compat as compat_module

        compat_module.configure(
            fetch_max_wait_ms=settings.fetch_max_wait_ms, verify_end_offsets=False
        )

    class Payment(faust.Record, serializer="json"):
        id: str
        account: str
        amount: float

    datadir = settings.data_dir / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    web_port = settings.web_port or 6066
    app = faust.App(
        app_id,
        broker=settings.broker,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        web_port=web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        canonical_url=f"http://127.0.0.1:{web_port}",
    )
    payments = app.topic(source, value_type=Payment)
    sink_topic = app.topic(sink, value_type=Payment)
    totals = app.Table("totals", default=float)

    @app.agent(payments)
    async def add_to_total(stream):
        async for payment in stream:
            totals[payment.account] += payment.amount
            await sink_topic.send(key=payment.account, value=payment)

    return app


def run_naive(settings: Settings, *, app_id: str, source: str, sink: str, compat: bool) -> int:
    import faust
    import mode.loop

    mode.loop.use("uvloop")  # as the services run
    app = create_naive_app(settings, app_id=app_id, source=source, sink=sink, compat=compat)
    worker = faust.Worker(app, loglevel="warning")
    worker.execute_from_commandline()
    return 0


async def relay(settings: Settings, *, source: str, sink: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=settings.producer_linger_ms,
    )
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([TopicPartition(source, p) for p in range(settings.partitions)])
        await consumer.seek_to_beginning()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for m in messages:
                    await producer.send(sink, m.value, key=m.key)
    finally:
        await producer.stop()
        await consumer.stop()


COMMIT_INTERVAL_S = 2.8  # Faust's broker_commit_interval


class BareRows:
    """A table's rows in RocksDB, one database per partition, and its changelog, without Faust.

    What ``agents.table_rows.TableRows`` does for the services: a batch's
    writes kept in memory (later reads see them) until ``flush``, then one
    write batch per partition and the last write of each key to the
    changelog, on the partition of the input it came from (``partition``).
    """

    def __init__(self, root: Path, changelog: str, options: dict[str, int]) -> None:
        self.root = root
        self.changelog = changelog
        self.options = options  # as the services open theirs (apps.factory.rocksdb_options)
        self.partition = 0  # of the input being handled
        self._dbs: dict[int, Any] = {}
        self._pending: dict[bytes, tuple[bytes, int]] = {}

    def _db(self, partition: int) -> Any:
        db = self._dbs.get(partition)
        if db is None:
            from faust.stores.rocksdb import RocksDBOptions  # the options only: no Faust app

            path = self.root / str(partition)
            path.parent.mkdir(parents=True, exist_ok=True)
            options = RocksDBOptions(**self.options, use_rocksdict=True)
            db = self._dbs[partition] = options.open(path)
        return db

    def get(self, key: bytes) -> bytes | None:
        written = self._pending.get(key)
        if written is not None:
            return written[0]
        return self._db(self.partition).get(key)  # type: ignore[no-any-return]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._pending[key] = (value, self.partition)

    async def flush(self, producer: Any, n_partitions: int) -> None:
        if not self._pending:
            return
        from agents.output import send_batches
        from agents.table_rows import write_batches

        pending, self._pending = self._pending, {}
        write_batches(pending, self._db)
        await send_batches(
            producer,
            self.changelog,
            [(key, value, partition) for key, (value, partition) in pending.items()],
            n_partitions,
        )

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


async def bare_profile(settings: Settings, *, app_id: str, source: str, sink: str) -> None:
    """The profile service's work on plain aiokafka (see the module's docstring)."""
    from functools import partial

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from agents.account_agent import parse_request, score_request
    from agents.output import send_batches
    from agents.scoring import ProfileRules
    from agents.steps import profile_step
    from apps.factory import rocksdb_options

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    step = partial(profile_step, rules=ProfileRules())
    root = settings.data_dir / app_id
    options = rocksdb_options(settings)
    accounts = BareRows(root / "accounts", f"{app_id}-accounts-changelog", options)
    results = BareRows(root / "results", f"{app_id}-results-changelog", options)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=app_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=settings.batch_max_events,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=settings.producer_linger_ms,
        max_batch_size=256 * 1024,  # as the services' producer
    )
    await consumer.start()
    await producer.start()
    partitions = settings.partitions
    committed_at = loop.time()
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=1000)
            outgoing = []
            for tp, records in polled.items():
                accounts.partition = results.partition = tp.partition
                for record in records:
                    try:
                        request, tx = parse_request(record.value)
                    except Exception:  # as the service: an unreadable request is skipped
                        continue
                    scored = score_request("profile", request, tx, step, accounts, results)
                    outgoing.append((request["analysis_id"].encode(), scored.result, None))
            await accounts.flush(producer, partitions)
            await results.flush(producer, partitions)
            if outgoing:
                await send_batches(producer, sink, outgoing, partitions)
            if loop.time() - committed_at >= COMMIT_INTERVAL_S:
                await producer.flush()
                await consumer.commit()
                committed_at = loop.time()
    finally:
        await producer.stop()
        await consumer.stop()
        accounts.close()
        results.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.bench_baseline", description=__doc__)
    parser.add_argument("kind", choices=("naive", "relay", "profile"))
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--sink", default=SINK)
    parser.add_argument("--app-id", default="bench-naive", help="naive: the Faust app id")
    parser.add_argument(
        "--compat", action="store_true", help="naive: bound the fetch wait (apps.compat)"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.kind == "naive":
        return run_naive(
            settings, app_id=args.app_id, source=args.source, sink=args.sink, compat=args.compat
        )
    import uvloop

    if args.kind == "profile":
        uvloop.run(bare_profile(settings, app_id=args.app_id, source=args.source, sink=args.sink))
    else:
        uvloop.run(relay(settings, source=args.source, sink=args.sink))
    return 0


if __name__ == "__main__":
    sys.exit(main())
