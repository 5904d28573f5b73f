"""Building an AgentResult from a request and a score. Pure."""

from __future__ import annotations

from typing import Any

from agents.contracts import AgentResult, Reason


def agent_result(
    agent: str,
    request: dict[str, Any],
    *,
    score: float,
    reasons: list[Reason],
    features: dict[str, Any],
    processed_at: str,
) -> dict[str, Any]:
    result = AgentResult(
        analysis_id=request["analysis_id"],
        agent=agent,
        transaction_id=request["transaction_id"],
        account_id=request["account_id"],
        score=min(1.0, max(0.0, score)),
        reasons=reasons,
        features=features,
        event_time=request["event_time"],
        processed_at=processed_at,
    )
    return result.model_dump(mode="json")
