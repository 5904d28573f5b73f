"""The orchestrator's requests: AnalysisRequest's JSON, byte for byte."""

from __future__ import annotations

import uuid

import orjson

from agents.contracts import ANALYSIS_NAMESPACE, AnalysisRequest, Transaction, analysis_id_for
from agents.demo import DemoConfig, generate
from agents.fanout import fan_out


def _as_the_model_dumps(tx: Transaction, requested_at: str, **decision: object) -> bytes:
    request = AnalysisRequest(
        analysis_id=tx.analysis_id,
        transaction_id=tx.transaction_id,
        account_id=tx.account_id,
        event_time=tx.timestamp,
        requested_at=requested_at,
        transaction=tx.json_dict,
        **decision,
    )
    return orjson.dumps(request.model_dump(mode="json", exclude_none=True))


def test_the_requests_are_the_models_json_for_every_kind_of_transaction():
    raw = list(generate(DemoConfig(seed=4, transactions=400)))
    raw.append({**raw[0], "transaction_id": "extra-1", "note": {"kept": [1, 2]}})  # extra field
    raw.append({**raw[1], "transaction_id": "epoch-1", "timestamp": 1735689600.25})
    for body in raw:
        tx = Transaction.model_validate(body)
        out = fan_out(
            tx, requested_at="2026-12-01T00:00:00.123Z", expected_agents=["geo"], deadline_ms=900
        )
        assert out.agent_request == _as_the_model_dumps(tx, "2026-12-01T00:00:00.123Z")
        assert out.decision_request == _as_the_model_dumps(
            tx, "2026-12-01T00:00:00.123Z", expected_agents=["geo"], deadline_ms=900
        )
        assert out.analysis_id == tx.analysis_id


def test_an_analysis_id_is_the_uuid5_of_its_transaction_id():
    names = ["tx-1", "x", "tx-000123", "ü-ñ-東京", "a" * 128, "tx 1\t\n", "0" * 55, "9" * 56]
    names += [f"tx-{i:06d}" for i in range(2000)]
    for name in names:
        assert analysis_id_for(name) == str(uuid.uuid5(ANALYSIS_NAMESPACE, name)), name
