"""The decision join: a request and the agent results for one analysis_id. Pure."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from agents.contracts import rfc3339_to_ms


@dataclass(slots=True)
class Analysis:
    analysis_id: str
    request: dict[str, Any] | None = None  # request_of the AnalysisRequest
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> answer_of
    # The expected agents that did not answer, in the request's order (none
    # before the request): worked out when the state is made, since every
    # message asks for it several times and a state changes at most four times.
    missing: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        request, results = self.request, self.results
        self.missing = (
            ()
            if request is None
            else tuple([a for a in request["expected_agents"] if a not in results])
        )

    @property
    def expected_agents(self) -> list[str]:
        return list(self.request["expected_agents"]) if self.request else []

    @property
    def missing_agents(self) -> list[str]:
        return list(self.missing)

    @property
    def requested_ms(self) -> int:
        """When the orchestrator asked, in epoch ms (``request_of`` reads it)."""
        assert self.request is not None
        return self.request["requested_ms"]  # type: ignore[no-any-return]

    @property
    def deadline_ms(self) -> int:
        """The epoch ms at which it is decided without the agents that did not answer."""
        assert self.request is not None
        return self.requested_ms + self.request["deadline_ms"]  # type: ignore[no-any-return]


def with_request(state: Analysis, request: dict[str, Any]) -> Analysis:
    """The first request wins: a redelivered copy has a later requested_at."""
    if state.request is not None:
        return state
    return Analysis(state.analysis_id, request, dict(state.results))


_KEPT_OF_REQUEST = ("analysis_id", "transaction_id", "account_id", "event_time", "requested_at")


def request_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the decision keeps of an analysis request: its ids, times and expectations.

    Checked here, once, as ``answer_of`` checks a result: a request without
    them, with expected agents that are not names, a deadline that is not a
    whole number of ms or a request time that is not RFC 3339 raises
    ValueError. The transaction is not kept, and the expected agents are a
    tuple: held by every undecided join, the request is then nothing the
    cycle collector has to go through once it has looked at it.
    """
    try:
        request = {name: body[name] for name in _KEPT_OF_REQUEST}
        expected, deadline_ms = tuple(body["expected_agents"]), body["deadline_ms"]
        requested_ms = rfc3339_to_ms(request["requested_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an analysis request: {exc!r}") from exc
    if not all(isinstance(agent, str) for agent in expected):
        raise ValueError("an analysis request's expected agents need to be names")
    if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int):
        raise ValueError("an analysis request needs a deadline in whole ms")
    request.update(expected_agents=expected, deadline_ms=deadline_ms, requested_ms=requested_ms)
    return request


def answer_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the decision keeps of an agent's result: whose it is, its score, its reasons.

    Checked here, once, so that deciding can trust it: a result without an
    agent name, a numeric score or reasons of text codes and details raises
    ValueError. Each reason keeps its code and detail only, as a ``(code,
    detail)`` pair in a tuple: held by every undecided join, an answer is
    then nothing the cycle collector has to go through (see ``request_of``).
    """
    try:
        agent, score = result["agent"], result["score"]
        reasons = tuple([(r["code"], r["detail"]) for r in result.get("reasons", [])])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an agent result: {exc!r}") from exc
    if not isinstance(agent, str) or isinstance(score, bool) or not isinstance(score, int | float):
        raise ValueError("an agent result needs an agent name and a numeric score")
    if not all(isinstance(code, str) and isinstance(detail, str) for code, detail in reasons):
        raise ValueError("an agent result's reasons need a text code and detail")
    return {"agent": agent, "score": float(score), "reasons": reasons}


def with_result(state: Analysis, result: dict[str, Any]) -> Analysis:
    """The first answer of each agent wins, so a redelivery changes nothing."""
    agent = result["agent"]
    if agent in state.results:
        return state
    return Analysis(state.analysis_id, state.request, {**state.results, agent: result})


def complete(state: Analysis) -> bool:
    return state.request is not None and not state.missing


REQUEST = "request"  # the part of a join that is its analysis request
_REQUEST_ONLY = (REQUEST,)


def parts_of(state: Analysis) -> set[str]:
    """What a join holds: ``request`` once its request came, and each agent that answered."""
    return ({REQUEST} if state.request is not None else set()) | state.results.keys()


def waits_for(state: Analysis) -> tuple[str, ...]:
    """What a join waits for: its request, then the expected agents that did not answer."""
    return _REQUEST_ONLY if state.request is None else state.missing


def parts_to_hold(
    holding: Mapping[str, int],
    waiting: Mapping[str, int],
    parts: Sequence[str],
    limit: int,
    held: Set[str],
) -> set[str]:
    """The parts whose input should not be fetched for now, in one partition.

    When a backlog is read, each input topic goes at its own speed (a fetch is
    bounded in bytes; a request is five times the size of a result), and a
    topic that runs ahead fills memory with joins waiting for the others. A
    part held by ``limit`` undecided joins or more is held back until at most
    half that many hold it. The part most joins wait for is never held back:
    reading it is what completes them.
    """
    needed = max(parts, key=lambda part: waiting.get(part, 0))
    out = set()
    for part in parts:
        n = holding.get(part, 0)
        if part != needed and (n >= limit or (part in held and n > limit // 2)):
            out.add(part)
    return out


@dataclass(slots=True)
class Pending:
    """An undecided analysis: its join state and what to acknowledge once it is decided."""

    state: Analysis
    partition: int
    first_seen_ms: int  # wall clock, when this worker read its first message
    first_stamp_ms: int  # the broker timestamp of that message (when it was produced)
    tokens: list[Any] = field(default_factory=list)
    deadline_sent: bool = False
    request_at: list[Any] | None = None  # its request's position: [topic, partition, offset]
    # Once past its deadline while an answer may still be unread: the position
    # of the message the deadline decision will be made by (its tick or request).
    decide_by: list[Any] | None = None


@dataclass(slots=True)
class RequestClock:
    """How far one partition of the analysis requests has been read."""

    stamp_ms: int  # the latest timestamp of a request read
    seen_ms: int  # wall clock, when a request was last read


class PendingJoins:
    """Undecided analyses, in memory, by analysis_id.

    Nothing here is written anywhere: the messages that built a join stay
    unacknowledged until it is decided, so after a crash or a rebalance they
    are read again and the join is built again.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Pending] = {}
        self._requests: dict[int, RequestClock] = {}  # by partition
        # By partition: how many joins hold each part (the request, an agent's result).
        self._parts: dict[int, Counter[str]] = {}
        self._waiting: dict[int, Counter[str]] = {}  # by partition: joins waiting for each part

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, analysis_id: str) -> Pending | None:
        return self._by_id.get(analysis_id)

    def add(
        self, analysis_id: str, partition: int, token: Any, now_ms: int, stamp_ms: int
    ) -> Pending:
        """``stamp_ms``: the message's timestamp; ``now_ms``: the wall clock."""
        pending = self._by_id.get(analysis_id)
        if pending is None:
            pending = self._by_id[analysis_id] = Pending(
                Analysis(analysis_id), partition, now_ms, stamp_ms
            )
            _counter(self._waiting, partition).update(waits_for(pending.state))
        pending.tokens.append(token)
        return pending

    def update(self, pending: Pending, state: Analysis) -> None:
        """Set a join's state (keeps count of what the joins hold and wait for)."""
        old = pending.state
        if state is old:
            return
        partition = pending.partition
        # What it holds now and did not: parts_of(state) - parts_of(old), without the sets.
        parts = _counter(self._parts, partition)
        if state.request is not None and old.request is None:
            parts[REQUEST] += 1
        old_results = old.results
        for agent in state.results:
            if agent not in old_results:
                parts[agent] += 1
        if state.request is not None or old.request is not None:  # else both wait for the request
            waiting = _counter(self._waiting, partition)
            before, after = waits_for(old), waits_for(state)  # a few parts each: no sets
            for part in before:
                if part not in after:
                    waiting[part] -= 1
            for part in after:
                if part not in before:
                    waiting[part] += 1
        pending.state = state

    def holding(self, partition: int) -> Counter[str]:
        """For each part (``request`` or an agent), the joins of this partition holding it."""
        return self._parts.get(partition) or Counter()

    def waiting(self, partition: int) -> Counter[str]:
        """For each part, the joins of this partition waiting for it."""
        return self._waiting.get(partition) or Counter()

    def saw_request(self, partition: int, stamp_ms: int, now_ms: int) -> None:
        """Call for every analysis request read, with its timestamp and the wall clock."""
        clock = self._requests.get(partition)
        if clock is None:
            self._requests[partition] = RequestClock(stamp_ms, now_ms)
        else:
            clock.stamp_ms = max(clock.stamp_ms, stamp_ms)
            clock.seen_ms = now_ms

    def requests_held_back(self, partition: int, now_ms: int) -> None:
        """Call while this worker itself does not fetch the partition's requests.

        Not reading any request is then no sign that none are coming: it does
        not make the partition's results orphans.
        """
        clock = self._requests.get(partition)
        if clock is None:
            self._requests[partition] = RequestClock(stamp_ms=0, seen_ms=now_ms)
        else:
            clock.seen_ms = now_ms

    def pop(self, analysis_id: str) -> Pending | None:
        pending = self._by_id.pop(analysis_id, None)
        if pending is not None:
            p = pending.partition
            _counter(self._parts, p).subtract(parts_of(pending.state))
            _counter(self._waiting, p).subtract(waits_for(pending.state))
        return pending

    def drop_partitions(self, partitions: set[int]) -> list[Pending]:
        dropped = [p for p in self._by_id.values() if p.partition in partitions]
        for p in dropped:
            del self._by_id[p.state.analysis_id]
        for partition in partitions:
            self._requests.pop(partition, None)
            self._parts.pop(partition, None)
            self._waiting.pop(partition, None)
        return dropped

    def orphans(self, now_ms: int, after_ms: int) -> list[Pending]:
        """Joins whose request is not coming: results of a request that was lost.

        A request is produced before its results, so a join without one is an
        orphan only when the requests of its partition have been read up to
        ``after_ms`` past the join's first result (by timestamp: its request
        would have been read by now), or none has been read for ``after_ms``
        while the join waited. Waiting time alone is not enough: a worker
        catching up on a backlog reads the small results faster than the large
        requests, and its results can be minutes ahead of their requests.
        """
        out = []
        for p in self._by_id.values():
            if p.state.request is not None:
                continue
            clock = self._requests.get(p.partition)
            if clock is not None and clock.stamp_ms - p.first_stamp_ms >= after_ms:
                out.append(p)  # the requests have moved on past it
            elif now_ms - max(p.first_seen_ms, clock.seen_ms if clock else 0) >= after_ms:
                out.append(p)  # no request at all for that long
        return out


def unread_answers(
    state: Analysis, deadline_ms: int, read_past: Callable[[str, int], bool]
) -> list[str]:
    """The missing agents whose answer may have come by the deadline and not been read yet.

    ``read_past(agent, at_ms)`` tells whether the agent's results partition of
    this join has been read up to ``at_ms``: nothing produced before it is
    left unread there. An agent is missing at the deadline only then: behind
    a backlog (after an outage of the decision service, or while it lags at
    full speed) an answer produced in time can still be waiting in Kafka when
    the deadline passes.
    """
    return [agent for agent in state.missing if not read_past(agent, deadline_ms)]


class ReadPositions:
    """How far this worker has read each input partition: the next offset and the latest timestamp."""

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._stamp: dict[tuple[str, int], int] = {}

    def saw(self, topic: str, partition: int, offset: int, stamp_ms: int) -> None:
        key = (topic, partition)
        if offset >= self._next.get(key, 0):
            self._next[key] = offset + 1
        if stamp_ms > self._stamp.get(key, -1):
            self._stamp[key] = stamp_ms

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The offset after the last message read there, or None if none was."""
        return self._next.get((topic, partition))

    def stamped_past(self, topic: str, partition: int, at_ms: int) -> bool:
        """Whether a message stamped at ``at_ms`` or later was read there.

        A partition is appended to in time order, so everything produced before
        ``at_ms`` was read by then (up to the clock skew of its producers).
        """
        return self._stamp.get((topic, partition), -1) >= at_ms

    def forget(self, partitions: Set[int]) -> None:
        for key in [k for k in self._next if k[1] in partitions]:
            del self._next[key]
            self._stamp.pop(key, None)


class OverdueJoins:
    """Joins past their deadline waiting for one results partition to be read up to it.

    By (topic, partition), a heap of (deadline ms, analysis_id); an entry whose
    join was decided meanwhile is the caller's to skip.
    """

    def __init__(self) -> None:
        self._by_tp: dict[tuple[str, int], list[tuple[int, str]]] = {}

    def wait(self, topic: str, partition: int, deadline_ms: int, analysis_id: str) -> None:
        heapq.heappush(self._by_tp.setdefault((topic, partition), []), (deadline_ms, analysis_id))

    def partitions(self) -> list[tuple[str, int]]:
        """The (topic, partition) pairs some join waits for."""
        return list(self._by_tp)

    def ready(self, topic: str, partition: int, read_past: Callable[[int], bool]) -> list[str]:
        """Takes off the joins waiting for (topic, partition) whose deadline it was read past.

        ``read_past(deadline_ms)`` must hold for every deadline up to one for
        which it holds: the earliest deadlines are tried first, and the first
        one not read past ends the search.
        """
        heap = self._by_tp.get((topic, partition))
        out: list[str] = []
        while heap and read_past(heap[0][0]):
            out.append(heapq.heappop(heap)[1])
        if not heap:
            self._by_tp.pop((topic, partition), None)
        return out

    def drop_partitions(self, partitions: Set[int]) -> None:
        for key in [k for k in self._by_tp if k[1] in partitions]:
            del self._by_tp[key]


def _counter(by_partition: dict[int, Counter[str]], partition: int) -> Counter[str]:
    """The partition's counter, made on first use (not a new one made for every lookup)."""
    counter = by_partition.get(partition)
    if counter is None:
        counter = by_partition[partition] = Counter()
    return counter
