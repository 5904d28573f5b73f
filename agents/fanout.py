"""What the orchestrator sends for one accepted transaction. Pure."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from agents.contracts import Transaction


@dataclass(frozen=True, slots=True)
class FanOut:
    analysis_id: str
    agent_request: bytes  # to agent.<name>.requests, keyed by account_id
    decision_request: bytes  # to agent.decision.requests, keyed by analysis_id


def fan_out(
    tx: Transaction, *, requested_at: str, expected_agents: list[str], deadline_ms: int
) -> FanOut:
    """The requests for ``tx``: an ``AnalysisRequest`` as JSON, built as a plain dict.

    The same bytes as ``AnalysisRequest(...).model_dump(mode="json",
    exclude_none=True)`` (a unit test holds it to that), without validating the
    transaction a second time: it is a validated ``Transaction`` already.
    """
    analysis_id = tx.analysis_id
    body = {
        "schema_version": 1,
        "analysis_id": analysis_id,
        "transaction_id": tx.transaction_id,
        "account_id": tx.account_id,
        "event_time": tx.timestamp,
        "requested_at": requested_at,
        "transaction": tx.json_dict,
    }
    decision_body = {**body, "expected_agents": expected_agents, "deadline_ms": deadline_ms}
    return FanOut(
        analysis_id=analysis_id,
        agent_request=orjson.dumps(body),
        decision_request=orjson.dumps(decision_body),
    )
