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

Input and output values are JSON objects ``{"id", "account", "amount"}``; the
output keeps ``id`` so the bench can match it (Faust adds its ``__faust`` field).

Run: ``python -m apps.bench_baseline naive|relay [--source T] [--sink T]`` with
``RISKSTREAM_BROKER``, ``RISKSTREAM_PARTITIONS``, ``RISKSTREAM_DATA_DIR`` and
``RISKSTREAM_WEB_PORT`` in the environment. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.bench_baseline", description=__doc__)
    parser.add_argument("kind", choices=("naive", "relay"))
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

    uvloop.run(relay(settings, source=args.source, sink=args.sink))
    return 0


if __name__ == "__main__":
    sys.exit(main())
