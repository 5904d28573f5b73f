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


@dataclass(slots=True)
class Pending:
    """An undecided analysis: its join state and what to acknowledge once it is decided."""

    state: Analysis
    partition: int
    first_seen_ms: int
    tokens: list[Any] = field(default_factory=list)
    deadline_sent: bool = False


class PendingJoins:
    """Undecided analyses, in memory, by analysis_id.

    Nothing here is written anywhere: the messages that built a join stay
    unacknowledged until it is decided, so after a crash or a rebalance they
    are read again and the join is built again.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Pending] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, analysis_id: str) -> Pending | None:
        return self._by_id.get(analysis_id)

    def add(self, analysis_id: str, partition: int, token: Any, now_ms: int) -> Pending:
        pending = self._by_id.get(analysis_id)
        if pending is None:
            pending = self._by_id[analysis_id] = Pending(Analysis(analysis_id), partition, now_ms)
        pending.tokens.append(token)
        return pending

    def pop(self, analysis_id: str) -> Pending | None:
        return self._by_id.pop(analysis_id, None)

    def drop_partitions(self, partitions: set[int]) -> list[Pending]:
        dropped = [p for p in self._by_id.values() if p.partition in partitions]
        for p in dropped:
            del self._by_id[p.state.analysis_id]
        return dropped

    def orphans(self, now_ms: int, older_than_ms: int) -> list[Pending]:
        """Joins that never got their request: results of a request that was lost."""
        return [
            p
            for p in self._by_id.values()
            if p.state.request is None and now_ms - p.first_seen_ms >= older_than_ms
        ]
