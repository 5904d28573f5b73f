"""The decision join: a request and the agent results for one analysis_id. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Analysis:
    analysis_id: str
    request: dict[str, Any] | None = None  # the AnalysisRequest (with expected_agents, deadline_ms)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> AgentResult

    @property
    def expected_agents(self) -> list[str]:
        return list(self.request["expected_agents"]) if self.request else []

    @property
    def missing_agents(self) -> list[str]:
        return [a for a in self.expected_agents if a not in self.results]

    def deadline_at_ms(self, requested_at_ms: int) -> int:
        assert self.request is not None
        return requested_at_ms + int(self.request["deadline_ms"])

    def to_dict(self) -> dict[str, Any]:
        return {"analysis_id": self.analysis_id, "request": self.request, "results": self.results}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        return cls(d["analysis_id"], d.get("request"), dict(d.get("results") or {}))


def with_request(state: Analysis, request: dict[str, Any]) -> Analysis:
    """The first request wins: a redelivered copy has a later requested_at."""
    if state.request is not None:
        return state
    return Analysis(state.analysis_id, request, dict(state.results))


def with_result(state: Analysis, result: dict[str, Any]) -> Analysis:
    """The first answer of each agent wins, so a redelivery changes nothing."""
    agent = result["agent"]
    if agent in state.results:
        return state
    return Analysis(state.analysis_id, state.request, {**state.results, agent: result})


def complete(state: Analysis) -> bool:
    return state.request is not None and not state.missing_agents
