"""The whole pipeline on the embedded broker, services as processes, a user's client."""

from __future__ import annotations

import time
import urllib.request

import orjson

from agents import topics
from agents.contracts import analysis_id_for
from agents.demo import DemoConfig, generate
from apps.cli import FULL_COLLECTION_INTERVAL_S
from tests.integration.conftest import get_json, wait_for
from tests.kafka_helpers import produce


def demo_transactions(run_id: str, n: int, seed: int = 3) -> list[dict]:
    """The demo data set, with ids made unique to this test run."""
    txs = []
    for tx in generate(DemoConfig(seed=seed, transactions=n, accounts=60, merchants=30)):
        tx["transaction_id"] = f"{run_id}-{tx['transaction_id']}"
        tx["account_id"] = f"{run_id}-{tx['account_id']}"
        txs.append(tx)
    return txs


def as_messages(txs: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(tx["account_id"].encode(), orjson.dumps(tx)) for tx in txs]


def test_every_valid_transaction_gets_exactly_one_decision(stack, run_id):
    txs = demo_transactions(run_id, 400)
    produce(stack.bootstrap, as_messages(txs))
    ids = {tx["transaction_id"] for tx in txs}
    found = stack.decisions_for(ids)
    assert set(found) == ids, f"{len(ids - set(found))} transactions got no decision"
    repeated = {t: ds for t, ds in found.items() if len(ds) != 1}
    assert not repeated, f"{len(repeated)} transactions got more than one decision"
    decisions = [ds[0] for ds in found.values()]
    for d in decisions:
        assert d["analysis_id"] == analysis_id_for(d["transaction_id"])
        assert d["outcome"] in ("approve", "review", "decline")
        assert 0.0 <= d["score"] <= 1.0
    # The injected fraud makes every agent fire somewhere in the data set.
    fired = {r["agent"] for d in decisions for r in d["reasons"]}
    assert fired == {"velocity", "profile", "geo"}, fired
    assert {d["outcome"] for d in decisions} >= {"approve", "decline"}


def test_each_malformed_message_lands_in_the_dlq_with_its_reason_while_valid_traffic_flows(
    stack, run_id
):
    good = demo_transactions(run_id, 20, seed=11)
    first = good[0]
    bad: list[tuple[bytes | None, bytes, str]] = [
        (b"k-json", f"{run_id} not json".encode(), "invalid_json"),
        (b"k-utf8", run_id.encode() + b"\xff\xfe\xfd", "invalid_json"),
        (b"k-array", orjson.dumps([run_id]), "not_an_object"),
        (b"k-nover", orjson.dumps({"transaction_id": f"{run_id}-nv"}), "missing_schema_version"),
        (
            b"k-ver7",
            orjson.dumps({**first, "schema_version": 7, "transaction_id": f"{run_id}-v7"}),
            "unknown_schema_version",
        ),
        (
            b"k-amount",
            orjson.dumps({**first, "amount": -3, "transaction_id": f"{run_id}-neg"}),
            "invalid_field",
        ),
        (
            first["account_id"].encode(),
            orjson.dumps({**first, "amount": first["amount"] + 1}),
            "conflicting_duplicate",
        ),
    ]
    messages = as_messages(good[:10])
    for key, value, _ in bad:
        messages.append((key, value))
    messages += as_messages(good[10:])
    produce(stack.bootstrap, messages)

    ids = {tx["transaction_id"] for tx in good}
    found = stack.decisions_for(ids)
    assert set(found) == ids and all(len(ds) == 1 for ds in found.values())

    def ours() -> list[dict]:
        letters = [m.json for m in stack.read(topics.DEAD_LETTERS, idle_s=1.0)]
        return [
            d
            for d in letters
            if run_id in d["payload"] or d["payload"] == _b64(run_id.encode() + b"\xff\xfe\xfd")
        ]

    letters = wait_for(
        lambda: (ls := ours()) and len(ls) >= len(bad) and ls, 30, what="dead letters"
    )
    assert sorted(d["reason"] for d in letters) == sorted(r for _, _, r in bad)
    for d in letters:
        assert d["source"]["topic"] == "transactions"
        assert d["source"]["offset"] >= 0 and 0 <= d["source"]["partition"] < 4
        assert d["error"] and d["failed_at"].endswith("Z")
    binary = next(d for d in letters if d["payload_encoding"] == "base64")
    assert binary["reason"] == "invalid_json"


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def test_a_transaction_sent_twice_changes_no_counter_and_gets_one_decision(stack, run_id):
    [tx] = demo_transactions(run_id, 1, seed=5)
    account = tx["account_id"]
    produce(stack.bootstrap, as_messages([tx]))
    assert len(stack.decisions_for({tx["transaction_id"]})[tx["transaction_id"]]) == 1

    def state() -> tuple:
        v = get_json(f"{stack.url('velocity')}/accounts/{account}/velocity")
        p = get_json(f"{stack.url('profile')}/accounts/{account}/profile")
        m = get_json(f"{stack.url('velocity')}/merchants/{tx['merchant_id']}/velocity")
        return v[1]["windows"]["24h"], p[1]["count"], p[1]["mean_amount"], m[1]["windows"]["24h"]

    before = state()
    assert before[0]["count"] == 1 and before[1] == 1
    dup_before = stack.metric(
        "riskstream_duplicate_transactions_total", "profile", service="profile"
    )
    produce(stack.bootstrap, as_messages([tx]))  # the same body again
    wait_for(
        lambda: (
            stack.metric("riskstream_duplicate_transactions_total", "profile", service="profile")
            > dup_before
        ),
        what="the resend to reach the profile agent",
    )
    assert state() == before
    decisions = stack.decisions_for({tx["transaction_id"]})[tx["transaction_id"]]
    assert len(decisions) == 1


def test_lookups_answer_for_known_keys_and_404_for_unknown_ones(stack, run_id):
    txs = demo_transactions(run_id, 30, seed=13)
    produce(stack.bootstrap, as_messages(txs))
    stack.decisions_for({tx["transaction_id"] for tx in txs})
    tx = txs[-1]
    account = tx["account_id"]
    status, body, _ = get_json(f"{stack.url('velocity')}/accounts/{account}/velocity")
    assert status == 200 and set(body["windows"]) == {"1m", "10m", "1h", "24h"}
    status, body, _ = get_json(f"{stack.url('profile')}/accounts/{account}/profile")
    assert status == 200 and body["count"] == sum(t["account_id"] == account for t in txs)
    status, body, _ = get_json(f"{stack.url('geo')}/accounts/{account}/geo")
    assert status == 200 and body["account_id"] == account
    status, body, _ = get_json(
        f"{stack.url('decision')}/transactions/{tx['transaction_id']}/decision"
    )
    assert status == 200 and body["transaction_id"] == tx["transaction_id"]
    status, same, _ = get_json(f"{stack.url('decision')}/decisions/{body['analysis_id']}")
    assert status == 200 and same == body
    for service, path in [
        ("velocity", f"/accounts/{run_id}-nobody/velocity"),
        ("velocity", f"/merchants/{run_id}-nowhere/velocity"),
        ("profile", f"/accounts/{run_id}-nobody/profile"),
        ("geo", f"/accounts/{run_id}-nobody/geo"),
        ("decision", f"/decisions/{run_id}-none"),
        ("decision", f"/transactions/{run_id}-none/decision"),
        ("decision", "/no/such/path"),
    ]:
        status, body, headers = get_json(stack.url(service) + path)
        assert status == 404, (service, path, status)
        assert body["error"] and headers["Content-Type"].startswith("application/json")
    for service in ("orchestrator", "velocity", "profile", "geo", "decision"):
        assert get_json(stack.url(service) + "/health")[0] == 200
        assert get_json(stack.url(service) + "/ready")[0] == 200


def test_metrics_count_what_happened(stack, run_id):
    txs = demo_transactions(run_id, 40, seed=17)
    before_accepted = stack.metric("riskstream_transactions_accepted_total", "orchestrator")
    before_dlq = stack.metric(
        "riskstream_dead_letters_total", "orchestrator", reason="not_an_object"
    )
    produce(stack.bootstrap, as_messages(txs) + [(None, b"[1]")])
    stack.decisions_for({tx["transaction_id"] for tx in txs})
    wait_for(
        lambda: (
            stack.metric("riskstream_dead_letters_total", "orchestrator", reason="not_an_object")
            == before_dlq + 1
        ),
        what="the dead letter to be counted",
    )
    assert (
        stack.metric("riskstream_transactions_accepted_total", "orchestrator")
        == before_accepted + 40
    )
    decided = sum(
        stack.metric("riskstream_decisions_total", "decision", outcome=o)
        for o in ("approve", "review", "decline")
    )
    assert decided == stack.metric("riskstream_decision_latency_seconds_count", "decision") > 0
    for agent in ("velocity", "profile", "geo"):
        assert stack.metric("riskstream_agent_score_count", agent, agent=agent) >= 40
    # Faust's own sensor is there too.
    text = urllib.request.urlopen(f"{stack.url('decision')}/metrics", timeout=5).read().decode()
    assert "decision_messages_received" in text


def test_each_worker_collects_its_whole_heap_every_few_seconds_even_idle(stack):
    """The young generation is collected rarely; every generation on a timer (tune_gc)."""
    full = "python_gc_collections_total"
    for service in ("orchestrator", "decision"):
        before = stack.metric(full, service, generation="2")
        time.sleep(FULL_COLLECTION_INTERVAL_S * 2.5)
        assert stack.metric(full, service, generation="2") - before >= 2, service
    assert stack.metric("process_resident_memory_bytes", "decision") > 0


def test_a_burst_reaches_the_agents_in_batches_not_one_message_at_a_time(stack, run_id):
    """Faust's consumer yielded to the loop for every message, so each batch held one."""
    txs = demo_transactions(run_id, 300, seed=23)
    name, agent = "riskstream_batch_events", {"agent": "validate_transactions"}
    before_sum = stack.metric(f"{name}_sum", "orchestrator", **agent)
    before_count = stack.metric(f"{name}_count", "orchestrator", **agent)
    produce(stack.bootstrap, as_messages(txs))  # one produce request, a few fetches
    stack.decisions_for({tx["transaction_id"] for tx in txs})
    events = stack.metric(f"{name}_sum", "orchestrator", **agent) - before_sum
    batches = stack.metric(f"{name}_count", "orchestrator", **agent) - before_count
    assert events == 300
    assert batches <= 300 / 10, f"300 transactions came in {batches:.0f} batches"
    # Lag monitoring: the end offset of each partition read (tracked once per
    # partition and poll, not per message) is where the partition ends.
    ends: dict[int, int] = {}
    for message in stack.read(topics.TRANSACTIONS, idle_s=2.0):
        ends[message.partition] = max(ends.get(message.partition, 0), message.offset + 1)
    gauge = {
        p: stack.metric(
            "orchestrator_topic_partition_end_offset",
            "orchestrator",
            partition=str(p),
            topic=topics.TRANSACTIONS,
        )
        for p in ends
    }
    assert gauge == {p: float(end) for p, end in ends.items()}
