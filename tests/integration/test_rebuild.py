"""`riskstream rebuild all`: state recomputed from the input topics equals the state it replaced."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents import topics
from apps.broker import free_port
from tests.integration.conftest import get_json, running_stack, wait_for
from tests.integration.test_pipeline import as_messages, demo_transactions
from tests.kafka_helpers import produce

WALL_CLOCK = ("decided_at", "latency_ms")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"RISKSTREAM_DECISION_MODE": "wait_for_all"}
    with running_stack(tmp_path_factory, "rebuild", env) as s:
        yield s


def lookups(stack, txs) -> dict:
    out = {}
    for tx in txs:
        a, m = tx["account_id"], tx["merchant_id"]
        out[("velocity", a)] = get_json(f"{stack.url('velocity')}/accounts/{a}/velocity")[1]
        out[("merchant", m)] = get_json(f"{stack.url('velocity')}/merchants/{m}/velocity")[1]
        out[("profile", a)] = get_json(f"{stack.url('profile')}/accounts/{a}/profile")[1]
        out[("geo", a)] = get_json(f"{stack.url('geo')}/accounts/{a}/geo")[1]
    return out


def test_rebuilding_every_service_gives_the_same_state_and_the_same_decisions(stack, run_id):
    txs = demo_transactions(run_id, 150, seed=51)
    produce(stack.bootstrap, as_messages(txs))
    ids = {tx["transaction_id"] for tx in txs}
    first = stack.decisions_for(ids)
    assert all(len(ds) == 1 for ds in first.values())
    state_before = lookups(stack, txs)

    stack.supervisor.stop_all()
    env = {
        **os.environ,
        "RISKSTREAM_BROKER": stack.settings.broker,
        "RISKSTREAM_PARTITIONS": "4",
    }
    # The five rebuilds are independent (own group, own topics, own data dir): run at once.
    rebuilds = {}
    for service in topics.SERVICES:
        # each service keeps its state under <root>/<service>/<service>
        # The embedded broker keeps reporting members that left: the workers
        # were stopped by pid above, so the group check is skipped.
        rebuilds[service] = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "rebuild", service, "--force"],
            env={**env, "RISKSTREAM_DATA_DIR": str(stack.root / service)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        for service, proc in rebuilds.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{service}: {out}{err}"
            assert not (stack.root / service / service).exists()
    finally:
        for proc in rebuilds.values():  # stopped by pid whatever failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for service in topics.SERVICES:
        port = stack.supervisor.services[service].port
        stack.supervisor.start(service, port, data_dir=stack.root / service)
    stack.supervisor.wait_ready(timeout_s=180)

    again = stack.decisions_for(ids, timeout_s=120)

    def rebuilt(tx_id: str) -> list[dict]:
        return [d for d in again[tx_id] if d["decided_at"] != first[tx_id][0]["decided_at"]]

    def every_one_rebuilt() -> bool:
        again.update(stack.decisions_for(ids))
        return all(rebuilt(t) for t in ids)

    wait_for(every_one_rebuilt, 120, interval_s=2, what="a rebuilt decision for every transaction")
    for tx_id in ids:
        [original] = first[tx_id]
        [new] = rebuilt(tx_id)
        assert {k: v for k, v in new.items() if k not in WALL_CLOCK} == {
            k: v for k, v in original.items() if k not in WALL_CLOCK
        }
    assert lookups(stack, txs) == state_before


def test_rebuild_refuses_while_workers_of_the_service_run(stack):
    env = {
        **os.environ,
        "RISKSTREAM_BROKER": stack.settings.broker,
        "RISKSTREAM_DATA_DIR": str(stack.root / "profile"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli", "rebuild", "profile", "--wait", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "stop every `riskstream worker profile` first" in done.stderr
    assert get_json(f"{stack.url('profile')}/ready")[0] == 200
    assert free_port()  # the stack keeps running
