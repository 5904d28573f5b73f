"""The decision policy: agent scores in, one outcome out. Pure and deterministic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agents.contracts import Outcome
from tables.join_state import Analysis

MissingPolicy = Literal["ignore", "review", "decline"]
_RANK: dict[str, int] = {"approve": 0, "review": 1, "decline": 2}


@dataclass(frozen=True, slots=True)
class Policy:
    weights: dict[str, float]
    review_threshold: float = 0.5
    decline_threshold: float = 0.8
    missing_agent_policy: MissingPolicy = "review"


def combined_score(scores: dict[str, float], weights: dict[str, float]) -> float:
    """Noisy-OR of weighted agent scores: one confident agent is enough to act,
    several weak signals add up, and the result stays in [0, 1]."""
    keep = 1.0
    for agent, score in scores.items():
        keep *= 1.0 - min(1.0, max(0.0, weights.get(agent, 1.0) * score))
    return round(1.0 - keep, 4)


def outcome_for(score: float, policy: Policy, missing: list[str]) -> Outcome:
    outcome: Outcome = "approve"
    if score >= policy.decline_threshold:
        outcome = "decline"
    elif score >= policy.review_threshold:
        outcome = "review"
    if missing and policy.missing_agent_policy != "ignore":
        floor = policy.missing_agent_policy
        if _RANK[floor] > _RANK[outcome]:
            outcome = floor
    return outcome


def decide(
    state: Analysis, policy: Policy, *, decided_at: str, latency_ms: float
) -> dict[str, Any]:
    """The Decision document, as ``Decision(...).model_dump(mode="json")`` makes it.

    Built directly, in the model's field order (a reason's agent after its code
    and detail, as ``AgentReason`` inherits them): every part of it was checked
    on the way in (``answer_of``, the orchestrator's request), and the model
    with its nested reasons and summaries cost more than the deciding. A unit
    test holds the JSON to the model's, byte for byte.
    """
    request = state.request
    assert request is not None, "a decision needs its request"
    results = state.results
    answered = [a for a in state.expected_agents if a in results]
    scores = {a: float(results[a]["score"]) for a in answered}
    score = combined_score(scores, policy.weights)
    missing = state.missing_agents
    return {
        "schema_version": 1,
        "analysis_id": state.analysis_id,
        "transaction_id": request["transaction_id"],
        "account_id": request["account_id"],
        "outcome": outcome_for(score, policy, missing),
        "score": score,
        "reasons": [
            {"code": code, "detail": detail, "agent": a}
            for a in answered
            for code, detail in results[a]["reasons"]
        ],
        "agents": {
            a: {
                "score": scores[a],
                "reasons": [
                    {"code": code, "detail": detail} for code, detail in results[a]["reasons"]
                ],
            }
            for a in answered
        },
        "missing_agents": missing,
        "event_time": request["event_time"],
        "decided_at": decided_at,
        "latency_ms": round(float(latency_ms), 3),
    }
