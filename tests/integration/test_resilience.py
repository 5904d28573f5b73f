"""Scaling out and crashing: two workers of a service, SIGKILL with an empty data dir."""

from __future__ import annotations

import shutil

import pytest

from apps.broker import free_port
from tests.integration.conftest import get_json, running_stack, wait_for
from tests.integration.test_pipeline import as_messages, demo_transactions
from tests.kafka_helpers import produce

SERVED_BY = "X-Riskstream-Served-By"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, "resilience") as s:
        yield s


def test_with_two_velocity_workers_either_one_answers_for_every_key(stack, run_id):
    txs = demo_transactions(run_id, 120, seed=21)
    produce(stack.bootstrap, as_messages(txs))
    stack.decisions_for({tx["transaction_id"] for tx in txs})

    second = stack.supervisor.start(
        "velocity", free_port(), name="velocity-2", data_dir=stack.root / "velocity-2"
    )
    workers = [stack.url("velocity"), second.url]
    probe = f"{second.url}/accounts/{txs[0]['account_id']}/velocity"

    # While the new worker joins and recovers, it says so: 503, Retry-After, JSON.
    unavailable = []

    def both_ready() -> bool:
        status, body, headers = get_json(probe)
        if status == 503:
            unavailable.append((body, headers))
        return all(get_json(f"{w}/ready")[0] == 200 for w in workers)

    wait_for(both_ready, timeout_s=90, interval_s=0.1, what="two ready velocity workers")
    assert unavailable, "the joining worker never answered 503 while it was not ready"
    body, headers = unavailable[0]
    assert headers["Retry-After"] and body["status"] == 503 and body["error"]
    accounts = sorted({tx["account_id"] for tx in txs})
    merchants = sorted({tx["merchant_id"] for tx in txs})
    served_by = set()
    for path in [f"/accounts/{a}/velocity" for a in accounts] + [
        f"/merchants/{m}/velocity" for m in merchants
    ]:
        answers = []
        for w in workers:
            status, body, headers = wait_for(
                lambda w=w, path=path: (r := get_json(w + path)) and r[0] != 503 and r,
                30,
                what=path,
            )
            assert status == 200, (w, path, status, body)
            answers.append(body)
            served_by.add(headers[SERVED_BY])
        assert answers[0] == answers[1], path
    # Both workers own some of the keys: half of the answers were routed.
    assert len(served_by) == 2, served_by
    counted = sum(
        get_json(f"{workers[1]}/accounts/{a}/velocity")[1]["windows"]["24h"]["count"]
        for a in accounts
    )
    assert counted == len(txs)
    stack.supervisor.stop("velocity-2")
    wait_for(lambda: get_json(f"{workers[0]}/ready")[0] == 200, 60, what="velocity alone again")


@pytest.mark.parametrize("service", ["profile", "decision"])
def test_a_service_killed_and_restarted_with_an_empty_data_dir_rebuilds_its_tables(
    stack, run_id, service
):
    txs = demo_transactions(run_id, 60, seed=31)
    produce(stack.bootstrap, as_messages(txs[:40]))
    decided = stack.decisions_for({tx["transaction_id"] for tx in txs[:40]})
    account = txs[39]["account_id"]
    probe = {
        "profile": f"/accounts/{account}/profile",
        "decision": f"/transactions/{txs[39]['transaction_id']}/decision",
    }[service]
    before = get_json(stack.url(service) + probe)
    assert before[0] == 200

    sp = stack.supervisor.services[service]
    stack.supervisor.kill(service)  # SIGKILL: no shutdown, no flush
    shutil.rmtree(sp.data_dir / service, ignore_errors=True)
    produce(stack.bootstrap, as_messages(txs[40:]))  # traffic while it is down
    restarted = stack.supervisor.start(service, sp.port, data_dir=sp.data_dir)
    stack.supervisor.wait_ready(timeout_s=120, names=[service])
    assert restarted.pid != sp.pid

    after = wait_for(
        lambda: (r := get_json(stack.url(service) + probe)) and r[0] == 200 and r, 30, what=probe
    )
    if service == "profile":
        # Rebuilt from the changelog, then the later transactions were added on top.
        later = sum(t["account_id"] == account for t in txs[40:])
        assert after[1]["count"] == before[1]["count"] + later
        assert after[1]["first_seen"] == before[1]["first_seen"]
    else:
        assert after[1] == before[1]  # the same decision, not a new one

    ids = {tx["transaction_id"] for tx in txs}
    found = stack.decisions_for(ids)
    assert set(found) == ids, f"lost decisions: {sorted(ids - set(found))[:5]}"
    for tx_id in decided:
        # Decisions made before the crash are not made again differently.
        assert {d["outcome"] for d in found[tx_id]} == {decided[tx_id][0]["outcome"]}
