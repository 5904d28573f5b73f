"""The riskstream command as a user runs it: up, replay, topics create, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer

from agents import topics
from agents.demo import DemoConfig, generate
from agents.files import write_transactions
from apps.broker import EmbeddedBroker, free_port, port_is_free
from tests.integration.conftest import get_json, wait_for
from tests.kafka_helpers import produce, read_topic

RISKSTREAM = [sys.executable, "-m", "apps.cli"]


def free_port_block(n: int = 5) -> int:
    for _ in range(200):
        base = free_port()
        if base + n < 65535 and all(port_is_free("127.0.0.1", base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def test_up_serves_an_independent_client_and_stops_everything_on_ctrl_c(tmp_path):
    base, broker_port = free_port_block(), free_port()
    env = {
        **os.environ,
        "RISKSTREAM_DATA_DIR": str(tmp_path / "data"),
        "RISKSTREAM_PARTITIONS": "4",
    }
    up = subprocess.Popen(
        [*RISKSTREAM, "up", "--port-base", str(base), "--broker-port", str(broker_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, "riskstream up exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("ready"):
                break
        assert lines[-1].startswith("ready"), "".join(lines)
        bootstrap = f"127.0.0.1:{broker_port}"
        for i in range(5):
            assert get_json(f"http://127.0.0.1:{base + i}/ready")[0] == 200

        txs = list(generate(DemoConfig(seed=9, transactions=50)))
        bad = [(b"k", b"{nope"), (b"k", orjson.dumps({"schema_version": 2})), (None, b"[]")]
        produce(bootstrap, [(t["account_id"].encode(), orjson.dumps(t)) for t in txs] + bad)
        decisions = asyncio.run(read_topic(bootstrap, topics.DECISIONS, 4, until=50, timeout_s=60))
        assert sorted(m.json["transaction_id"] for m in decisions) == sorted(
            t["transaction_id"] for t in txs
        )
        letters = asyncio.run(read_topic(bootstrap, topics.DEAD_LETTERS, 4, until=3, timeout_s=30))
        assert sorted(m.json["reason"] for m in letters) == [
            "invalid_json",
            "not_an_object",
            "unknown_schema_version",
        ]
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "stopped" in out
    # Every service and the broker are gone: their ports are free again.
    wait_for(
        lambda: all(port_is_free("127.0.0.1", p) for p in [broker_port, *range(base, base + 5)]),
        10,
        what="ports to be released",
    )


def test_up_with_demo_decides_every_generated_transaction_and_exits(tmp_path):
    base, broker_port = free_port_block(), free_port()
    env = {**os.environ, "RISKSTREAM_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [
            *RISKSTREAM,
            "up",
            "--demo",
            "--demo-transactions",
            "300",
            "--demo-rate",
            "300",
            "--exit-after-demo",
            "--port-base",
            str(base),
            "--broker-port",
            str(broker_port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()
    summary = " ".join(last[-8:])
    assert "decided 300" in summary, summary
    assert "DECLINE" in done.stdout and "DLQ" in done.stdout


def test_topics_create_and_replay_feed_a_broker(tmp_path):
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log") as broker:
        env = {**os.environ, "RISKSTREAM_BROKER": broker.url, "RISKSTREAM_PARTITIONS": "3"}
        created = subprocess.run(
            [*RISKSTREAM, "topics", "create"], env=env, capture_output=True, text=True, timeout=60
        )
        assert created.returncode == 0, created.stderr
        again = subprocess.run(
            [*RISKSTREAM, "topics", "create"], env=env, capture_output=True, text=True, timeout=60
        )
        assert "created 0 topics" in again.stdout

        async def partitions() -> dict[str, int]:
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
            await consumer.start()
            try:
                names = await consumer.topics()
                return {t: len(consumer.partitions_for_topic(t) or ()) for t in names}
            finally:
                await consumer.stop()

        have = asyncio.run(partitions())
        wanted = topics.contract_topics() + topics.internal_topics() + topics.changelog_topics()
        assert {t: have.get(t) for t in wanted} == {t: 3 for t in wanted}

        rows = list(generate(DemoConfig(seed=4, transactions=40)))
        for suffix in ("jsonl", "csv", "parquet"):
            path = tmp_path / f"tx.{suffix}"
            write_transactions(path, rows)
            replay = subprocess.run(
                [*RISKSTREAM, "replay", str(path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert replay.returncode == 0, replay.stderr
            assert "replayed 40 messages" in replay.stdout
        sent = asyncio.run(
            read_topic(broker.bootstrap, topics.TRANSACTIONS, 3, until=120, timeout_s=20)
        )
        assert len(sent) == 120
        bodies = [m.json for m in sent]
        assert all(m.key == m.json["account_id"].encode() for m in sent)
        for row in rows:  # each format reproduced every transaction exactly
            assert bodies.count(row) == 3


def test_a_bad_setting_stops_a_worker_with_a_message_that_names_it():
    env = {**os.environ, "RISKSTREAM_PARTITIONS": "many"}
    done = subprocess.run(
        [*RISKSTREAM, "worker", "velocity"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RISKSTREAM_PARTITIONS" in done.stderr
