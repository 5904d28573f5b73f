"""The orchestrator agent: dead letters, dedup and fan-out, read back from real topics."""

from __future__ import annotations

import orjson

from agents import topics
from agents.contracts import analysis_id_for
from apps.orchestrator import create_app
from tests.agents.conftest import Harness
from tests.kafka_helpers import read_topic

TX = {
    "schema_version": 1,
    "transaction_id": "tx-1",
    "account_id": "acct-1",
    "amount": 10.0,
    "currency": "USD",
    "timestamp": "2025-01-01T00:00:00Z",
    "merchant_id": "m-1",
}


async def test_a_valid_transaction_fans_out_to_three_agents_and_the_decision(settings):
    async with Harness(create_app(settings), "validate_transactions") as h:
        await h.put(orjson.dumps(TX), key=b"acct-1")
        await h.flush()
    b, n = settings.bootstrap_servers, settings.partitions
    for agent in ("velocity", "profile", "geo"):
        [req] = await read_topic(b, topics.requests_topic(agent), n, until=1, timeout_s=10)
        assert req.key == b"acct-1"
        assert req.json["analysis_id"] == analysis_id_for("tx-1")
        assert req.json["transaction"]["amount"] == 10.0
        assert "expected_agents" not in req.json
    [dreq] = await read_topic(b, topics.DECISION_REQUESTS, n, until=1, timeout_s=10)
    assert dreq.key == analysis_id_for("tx-1").encode()
    assert dreq.json["expected_agents"] == ["velocity", "profile", "geo"]
    assert dreq.json["deadline_ms"] == settings.deadline_ms


async def test_a_malformed_value_is_dead_lettered_and_the_next_one_still_flows(settings):
    async with Harness(create_app(settings), "validate_transactions") as h:
        await h.put(b"\xff\xfenot json", key=b"k-1", partition=1)
        await h.put(orjson.dumps({**TX, "currency": "usd"}), key=b"acct-1", partition=1)
        await h.put(orjson.dumps(TX), key=b"acct-1", partition=1)
        await h.flush()
    b, n = settings.bootstrap_servers, settings.partitions
    letters = await read_topic(b, topics.DEAD_LETTERS, n, until=2, timeout_s=10)
    assert [m.json["reason"] for m in letters] == ["invalid_json", "invalid_field"]
    first = letters[0]
    assert first.key == b"k-1"
    assert first.json["payload_encoding"] == "base64"
    assert first.json["source"] == {"topic": "transactions", "partition": 1, "offset": 0}
    assert "currency" in letters[1].json["error"]
    assert len(await read_topic(b, topics.DECISION_REQUESTS, n, until=1, timeout_s=10)) == 1


async def test_a_resent_transaction_keeps_one_analysis_and_a_changed_one_is_a_conflict(settings):
    app = create_app(settings)
    async with Harness(app, "validate_transactions") as h:
        await h.put(orjson.dumps(TX), key=b"acct-1")
        await h.put(orjson.dumps(TX), key=b"acct-1")
        await h.put(orjson.dumps({**TX, "amount": 99.0}), key=b"acct-1")
        await h.flush()
    b, n = settings.bootstrap_servers, settings.partitions
    [conflict] = await read_topic(b, topics.DEAD_LETTERS, n, until=1, timeout_s=10)
    assert conflict.json["reason"] == "conflicting_duplicate"
    requests = await read_topic(b, topics.DECISION_REQUESTS, n, until=3, timeout_s=3)
    # The exact resend is sent on again (downstream is idempotent) under the same analysis.
    assert {m.json["analysis_id"] for m in requests} == {analysis_id_for("tx-1")}
    assert len(requests) == 2


async def test_a_message_keyed_by_something_else_is_rekeyed_by_account(settings):
    async with Harness(create_app(settings), "validate_transactions") as h:
        await h.put(orjson.dumps(TX), key=None, partition=1)
        await h.flush()
    b, n = settings.bootstrap_servers, settings.partitions
    [rekeyed] = await read_topic(b, topics.TRANSACTIONS_BY_ACCOUNT, n, until=1, timeout_s=10)
    assert rekeyed.key == b"acct-1"
    assert orjson.loads(rekeyed.value) == TX
