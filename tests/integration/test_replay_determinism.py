"""The same history replayed at any speed and any partition count gives the same decisions.

Two fresh stacks, in replay mode (decision_mode=wait_for_all, ordering=event_time):
one with 4 partitions fed by `riskstream replay` as fast as it goes, one with 2
partitions fed at a throttled rate. The data set crowds many accounts into few
merchants, so the merchant windows (the only state that mixes accounts, and so
the only one the arrival order could change) cross the reason threshold, and it
is shuffled a little so that events come out of order within the allowed lateness.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import orjson
import pytest

from agents import topics
from agents.contracts import rfc3339_to_ms
from agents.demo import DemoConfig, generate
from apps.broker import free_port
from tests.integration.conftest import running_stack, wait_for
from tests.integration.test_pipeline import as_messages
from tests.kafka_helpers import produce

WALL_CLOCK = ("processed_at", "decided_at", "latency_ms")
REPLAY_ENV = {"RISKSTREAM_DECISION_MODE": "wait_for_all", "RISKSTREAM_ORDERING": "event_time"}


ALLOWED_LATENESS_MS = 300_000  # the default RISKSTREAM_ALLOWED_LATENESS_S


def crowded_history(n: int = 500) -> list[dict]:
    config = DemoConfig(seed=23, accounts=150, merchants=3, transactions=n, mean_gap_s=4.0)
    txs = list(generate(config))
    rng = random.Random(5)
    # Out of order within blocks of 6 that span at most 2 min of event time: the
    # guarantee holds for events out of order by less than the allowed lateness.
    # (Shuffling every block put one 710 s behind: the throttled replay then
    # scored it behind the watermark whenever a marker came between the two.)
    for start in range(0, len(txs), 6):
        block = txs[start : start + 6]
        times = [rfc3339_to_ms(tx["timestamp"]) for tx in block]
        if max(times) - min(times) <= 120_000:
            rng.shuffle(block)
            txs[start : start + 6] = block
    return txs


def worst_lateness_ms(txs: list[dict]) -> int:
    newest, worst = 0, 0
    for tx in txs:
        time_ms = rfc3339_to_ms(tx["timestamp"])
        worst, newest = max(worst, newest - time_ms), max(newest, time_ms)
    return worst


def without_wall_clock(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in WALL_CLOCK}


def replay_and_collect(stack, path, rate: float, n: int) -> tuple[dict, dict]:
    env = {**os.environ, "RISKSTREAM_BROKER": stack.settings.broker}
    args = [sys.executable, "-m", "apps.cli", "replay", str(path)]
    if rate:
        args += ["--rate", str(rate)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = {tx["transaction_id"] for tx in orjson_lines(path)}
    decisions = stack.decisions_for(ids, timeout_s=180)
    assert set(decisions) == ids
    assert all(len(ds) == 1 for ds in decisions.values())
    results: dict[str, dict] = {}
    for m in stack.read(topics.results_topic("velocity"), until=n, timeout_s=60):
        results.setdefault(m.json["transaction_id"], m.json)
    assert set(results) == ids
    return (
        {t: without_wall_clock(ds[0]) for t, ds in decisions.items()},
        {t: without_wall_clock(r) for t, r in results.items()},
    )


def orjson_lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def test_fast_and_throttled_replays_on_different_partition_counts_decide_the_same(
    tmp_path_factory,
):
    txs = crowded_history()
    assert 0 < worst_lateness_ms(txs) < ALLOWED_LATENESS_MS  # out of order, within the bound
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    path.write_bytes(b"".join(orjson.dumps(tx) + b"\n" for tx in txs))

    with running_stack(tmp_path_factory, "replay-fast", REPLAY_ENV, partitions=4) as fast:
        fast_decisions, fast_results = replay_and_collect(fast, path, rate=0, n=len(txs))
        held = fast.metric("riskstream_held_transactions", of="velocity")
        behind = fast.metric("riskstream_behind_watermark_total", of="velocity")
    with running_stack(tmp_path_factory, "replay-slow", REPLAY_ENV, partitions=2) as slow:
        slow_decisions, slow_results = replay_and_collect(slow, path, rate=150, n=len(txs))
        slow_behind = slow.metric("riskstream_behind_watermark_total", of="velocity")

    # The merchant windows were really exercised, reasons included.
    merchant_counts = {r["features"]["merchant_accounts_1h"] for r in fast_results.values()}
    assert max(merchant_counts) >= 20, merchant_counts
    codes = {c["code"] for r in fast_results.values() for c in r["reasons"]}
    assert "VELOCITY_MERCHANT_MANY_ACCOUNTS_1H" in codes
    assert held == 0 and behind == 0

    differing = [t for t in fast_results if fast_results[t] != slow_results[t]]
    assert not differing, (
        f"{len(differing)} velocity results differ, e.g. "
        f"{fast_results[differing[0]]} vs {slow_results[differing[0]]}; "
        f"transactions behind the watermark in the throttled run: {slow_behind}"
    )
    differing = [t for t in fast_decisions if fast_decisions[t] != slow_decisions[t]]
    assert not differing, f"{len(differing)} decisions differ"


def test_a_transaction_held_behind_the_watermark_survives_a_crash_of_velocity(tmp_path_factory):
    # Sources never count as idle here: only newer transactions release the held ones.
    env = {**REPLAY_ENV, "RISKSTREAM_SOURCE_IDLE_MS": "600000"}
    # Two minutes of history: all of it within the allowed lateness, so all of it held.
    early = list(
        generate(
            DemoConfig(
                seed=31, accounts=40, merchants=5, transactions=80, mean_gap_s=1.0, fraud_rate=0
            )
        )
    )
    later = list(
        generate(
            DemoConfig(
                seed=32, accounts=40, merchants=5, transactions=80, start="2025-01-02T00:00:00Z"
            )
        )
    )
    for tx in later:
        tx["transaction_id"] = "later-" + tx["transaction_id"]
    early_ids = {tx["transaction_id"] for tx in early}
    with running_stack(tmp_path_factory, "replay-crash", env, partitions=2) as stack:
        produce(stack.bootstrap, as_messages(early))
        wait_for(
            lambda: stack.metric("riskstream_held_transactions", of="velocity") == len(early),
            timeout_s=60,
            what="every early transaction held by the merchant stage",
        )
        time.sleep(4)  # past Faust's commit interval: whatever could be committed, is
        scored = stack.read(topics.results_topic("velocity"), idle_s=1.0, timeout_s=10)
        assert not scored, "a transaction was scored before the watermark passed it"

        stack.supervisor.kill("velocity")
        stack.supervisor.start("velocity", free_port(), data_dir=stack.root / "velocity")
        stack.supervisor.wait_ready(timeout_s=120)
        produce(stack.bootstrap, as_messages(later))

        decisions = stack.decisions_for(early_ids, timeout_s=120)
        assert set(decisions) == early_ids
        assert all(len(ds) == 1 and not ds[0]["missing_agents"] for ds in decisions.values())
        results = stack.read(topics.results_topic("velocity"), idle_s=1.0, timeout_s=30)
        by_tx: dict[str, set] = {}
        for m in results:
            r = m.json
            by_tx.setdefault(r["transaction_id"], set()).add(orjson.dumps(without_wall_clock(r)))
        assert early_ids <= set(by_tx)
        # Scored once: a copy read again after the crash gets the identical result.
        assert all(len(by_tx[t]) == 1 for t in early_ids)


pytestmark = pytest.mark.integration
