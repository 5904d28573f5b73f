"""The `riskstream` command: up, worker, replay, topics create, rebuild, bench, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from agents.topics import SERVICES
from apps.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="riskstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole pipeline on this machine")
    up.add_argument("--broker", help="Kafka URL (kafka://host:port); default: the embedded broker")
    up.add_argument("--broker-port", type=int, default=9092, help="embedded broker port")
    up.add_argument("--demo", action="store_true", help="stream a generated data set")
    up.add_argument("--demo-transactions", type=int, default=5000)
    up.add_argument("--demo-rate", type=float, default=25.0, help="demo transactions per second")
    up.add_argument("--replay", type=Path, metavar="FILE", help="produce a file of transactions")
    up.add_argument("--exit-after-demo", action="store_true", help="stop once the demo is decided")
    up.add_argument("--quiet", action="store_true", help="summary lines only")
    up.add_argument("--port-base", type=int, default=6066, help="first of five web ports")
    up.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /ready")

    worker = sub.add_parser("worker", help="run one service against RISKSTREAM_BROKER")
    worker.add_argument("service", choices=SERVICES)

    replay = sub.add_parser("replay", help="produce a CSV, JSONL or Parquet file to `transactions`")
    replay.add_argument("file", type=Path)
    replay.add_argument(
        "--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)"
    )
    replay.add_argument("--broker", help="Kafka URL; default RISKSTREAM_BROKER")

    topics_cmd = sub.add_parser("topics", help="topic administration")
    topics_sub = topics_cmd.add_subparsers(dest="topics_command", required=True)
    create = topics_sub.add_parser(
        "create", help="create every topic with the configured partitions"
    )
    create.add_argument("--broker", help="Kafka URL; default RISKSTREAM_BROKER")

    rebuild = sub.add_parser("rebuild", help="recompute a service's state from its input topics")
    rebuild.add_argument("service", choices=[*SERVICES, "all"])
    rebuild.add_argument("--broker", help="Kafka URL; default RISKSTREAM_BROKER")
    rebuild.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the group to empty"
    )
    rebuild.add_argument(
        "--force",
        action="store_true",
        help="skip the empty-group check (workers known to be stopped)",
    )

    from apps.bench import add_parser as add_bench_parser

    add_bench_parser(sub)

    demo = sub.add_parser("demo", help="write the generated demo data set to a file")
    demo.add_argument("file", type=Path, help=".jsonl, .csv or .parquet")
    demo.add_argument("--transactions", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=7)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    if args.command == "worker":
        return run_worker(args.service)
    if args.command == "up":
        from apps.up import run_up

        return run_up(args)
    if args.command == "replay":
        from apps.replay import run_replay

        settings = load_settings(**({"broker": args.broker} if args.broker else {}))
        return asyncio.run(run_replay(settings, args.file, rate=args.rate))
    if args.command == "topics":
        from apps.kafka import create_topics

        settings = load_settings(**({"broker": args.broker} if args.broker else {}))
        created = asyncio.run(create_topics(settings))
        print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
        return 0
    if args.command == "rebuild":
        from apps.rebuild import RebuildError, rebuild

        settings = load_settings(**({"broker": args.broker} if args.broker else {}))
        services = list(SERVICES) if args.service == "all" else [args.service]
        try:
            asyncio.run(rebuild(settings, services, wait_empty_s=args.wait, force=args.force))
        except RebuildError as exc:
            print(f"riskstream rebuild: {exc}", file=sys.stderr)
            return 1
        print(f"rebuilt {', '.join(services)}: start the workers again")
        return 0
    if args.command == "bench":
        from apps.bench import run_bench

        return run_bench(args)
    if args.command == "demo":
        from agents.demo import DemoConfig, generate
        from agents.files import write_transactions

        n = write_transactions(
            args.file, generate(DemoConfig(seed=args.seed, transactions=args.transactions))
        )
        print(f"wrote {n} transactions to {args.file}")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


# Allocations (less deallocations) between two collections of the youngest
# generation (Python's default is 700), and seconds between two collections of
# the whole heap, which keep memory down (docs/benchmarks.md, The collector on
# a timer).
GC_YOUNG_THRESHOLD = 50_000
FULL_COLLECTION_INTERVAL_S = 2.0


def tune_gc(app: Any) -> None:
    """Collect cyclic garbage rarely, the whole heap on a timer, and never what startup made.

    Everything a service allocates per message is freed by reference
    counting: at full speed the collector found some 55-80 objects of cyclic
    garbage every few seconds in each service, the same ones each time, and
    nothing per message (docs/benchmarks.md), yet it ran after every 700
    allocations kept and went through every join held: 18 % of the
    decision's CPU and 7-10 % of the others'. ``gc.freeze()``
    moves what exists once the app is built out of its sight (reference
    counting still frees it), and the young generation waits for
    ``GC_YOUNG_THRESHOLD`` allocations kept.

    Collections of the whole heap keep memory down, though they find nothing
    unreachable: with none, filling the decision took its peak RSS from
    about 210 MB to 500 MB, and with one every second or two it stayed at
    about 200 (why is not understood; it is measured). Left to the
    collector's ratios they came too rarely once the young generation
    waited longer, so ``app`` collects every generation each
    ``FULL_COLLECTION_INTERVAL_S``: a few ms for a service's heap, some 35
    ms for the decision holding thousands of joins.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

    @app.timer(interval=FULL_COLLECTION_INTERVAL_S)
    async def collect_all_generations() -> None:
        gc.collect()


def run_worker(service: str) -> int:
    import faust
    import mode.loop

    from apps.services import create_service_app

    settings = load_settings()
    mode.loop.use("uvloop")
    app = create_service_app(service, settings)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=True)
    tune_gc(app)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
