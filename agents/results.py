"""Building an AgentResult from a request and a score. Pure."""

from __future__ import annotations

from typing import Any

from agents.contracts import Reason


def agent_result(
    agent: str,
    request: dict[str, Any],
    *,
    score: float,
    reasons: list[Reason],
    features: dict[str, Any],
    processed_at: str,
) -> dict[str, Any]:
    """The AgentResult document, as ``AgentResult(...).model_dump(mode="json")`` makes it.

    Built directly, in the model's field order: the model only checked what
    the agent itself had just computed, at 11 µs per result, more than the
    scoring. A unit test holds the JSON to the model's, byte for byte.
    """
    return {
        "schema_version": 1,
        "analysis_id": request["analysis_id"],
        "agent": agent,
        "transaction_id": request["transaction_id"],
        "account_id": request["account_id"],
        "score": float(min(1.0, max(0.0, score))),
        "reasons": [{"code": r.code, "detail": r.detail} for r in reasons],
        "features": features,
        "event_time": request["event_time"],
        "processed_at": processed_at,
    }
