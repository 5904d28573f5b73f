"""The decision policy and the join state behind it."""

from __future__ import annotations

import gc
import random
from collections import Counter

import orjson
import pytest

from agents.contracts import AgentReason, AgentSummary, Decision
from agents.decide import Policy, combined_score, decide, outcome_for
from tables.join_state import (
    Analysis,
    OverdueJoins,
    PendingJoins,
    ReadPositions,
    answer_of,
    complete,
    parts_of,
    parts_to_hold,
    request_of,
    unread_answers,
    waits_for,
    with_request,
    with_result,
)

REQUEST = {
    "analysis_id": "a-1",
    "transaction_id": "tx-1",
    "account_id": "acct-1",
    "event_time": "2025-01-01T00:00:13Z",
    "requested_at": "2026-01-01T00:00:00Z",
    "transaction": {},
    "expected_agents": ["velocity", "profile", "geo"],
    "deadline_ms": 500,
}


def result(agent: str, score: float, *codes: str) -> dict:
    return {
        "agent": agent,
        "analysis_id": "a-1",
        "score": score,
        "reasons": [{"code": c, "detail": f"{c} fired"} for c in codes],
    }


def answer(agent: str, score: float, *codes: str) -> dict:
    """What the decision keeps of ``result``: the join holds these."""
    return answer_of(result(agent, score, *codes))


POLICY = Policy(weights={"velocity": 1.0, "profile": 1.0, "geo": 1.0})


def test_one_confident_agent_is_enough_to_decline():
    assert combined_score({"velocity": 0.0, "profile": 0.0, "geo": 0.9}, POLICY.weights) == 0.9
    assert outcome_for(0.9, POLICY, []) == "decline"


def test_weak_signals_add_up_but_stay_within_one():
    score = combined_score({"velocity": 0.4, "profile": 0.4, "geo": 0.4}, POLICY.weights)
    assert 0.78 < score < 0.79
    assert combined_score({"a": 1.0, "b": 1.0}, {"a": 5.0, "b": 5.0}) == 1.0


def test_a_zero_weight_silences_an_agent():
    assert combined_score({"geo": 0.9}, {"geo": 0.0}) == 0.0


@pytest.mark.parametrize(
    ("score", "outcome"), [(0.0, "approve"), (0.49, "approve"), (0.5, "review"), (0.8, "decline")]
)
def test_thresholds_pick_the_outcome(score: float, outcome: str):
    assert outcome_for(score, POLICY, []) == outcome


@pytest.mark.parametrize(
    ("policy", "expected"), [("ignore", "approve"), ("review", "review"), ("decline", "decline")]
)
def test_the_missing_agent_policy_sets_a_floor(policy: str, expected: str):
    p = Policy(weights=POLICY.weights, missing_agent_policy=policy)
    assert outcome_for(0.1, p, ["geo"]) == expected
    assert outcome_for(0.9, p, ["geo"]) == "decline"  # a floor never lowers an outcome


def test_the_join_completes_when_every_expected_agent_answered_in_any_order():
    state = Analysis("a-1")
    state = with_result(state, answer("geo", 0.1))
    assert not complete(state)  # no request yet: who is expected is unknown
    state = with_request(state, REQUEST)
    state = with_result(state, answer("velocity", 0.2))
    assert state.missing_agents == ["profile"]
    state = with_result(state, answer("profile", 0.3))
    assert complete(state)


def test_a_redelivered_result_or_request_changes_nothing():
    state = with_result(with_request(Analysis("a-1"), REQUEST), answer("geo", 0.1))
    again = with_result(
        with_request(state, {**REQUEST, "requested_at": "later"}), answer("geo", 0.9)
    )
    assert again == state


def test_a_decision_names_reasons_by_agent_and_missing_agents():
    state = with_request(Analysis("a-1"), REQUEST)
    state = with_result(state, answer("velocity", 0.2))
    state = with_result(state, answer("geo", 0.9, "GEO_IMPOSSIBLE_TRAVEL"))
    d = decide(state, POLICY, decided_at="2026-01-01T00:00:00.100Z", latency_ms=100.0)
    assert d["outcome"] == "decline" and d["score"] == 0.92
    assert d["missing_agents"] == ["profile"]
    assert [(r["agent"], r["code"]) for r in d["reasons"]] == [("geo", "GEO_IMPOSSIBLE_TRAVEL")]
    assert set(d["agents"]) == {"velocity", "geo"}
    assert d["transaction_id"] == "tx-1" and d["event_time"] == "2025-01-01T00:00:13Z"


def _as_the_model_dumps(state: Analysis, decided_at: str, latency_ms: float) -> bytes:
    """The Decision built through the model, as ``decide`` built it before."""
    request = state.request
    assert request is not None
    answered = [a for a in state.expected_agents if a in state.results]
    scores = {a: float(state.results[a]["score"]) for a in answered}
    score = combined_score(scores, POLICY.weights)
    decision = Decision(
        analysis_id=state.analysis_id,
        transaction_id=request["transaction_id"],
        account_id=request["account_id"],
        outcome=outcome_for(score, POLICY, state.missing_agents),
        score=score,
        reasons=[
            AgentReason(agent=a, code=code, detail=detail)
            for a in answered
            for code, detail in state.results[a]["reasons"]
        ],
        agents={
            a: AgentSummary(
                score=scores[a],
                reasons=[{"code": c, "detail": d} for c, d in state.results[a]["reasons"]],
            )
            for a in answered
        },
        missing_agents=state.missing_agents,
        event_time=request["event_time"],
        decided_at=decided_at,
        latency_ms=round(latency_ms, 3),
    )
    return orjson.dumps(decision.model_dump(mode="json"))


def test_a_decision_is_the_models_json_byte_for_byte():
    rng = random.Random(11)
    codes = ["VELOCITY_BURST", "PROFILE_AMOUNT_OUTLIER", "GEO_FAR", "GEO_IMPOSSIBLE_TRAVEL"]
    answered_some = 0
    for i in range(400):
        expected = rng.sample(["velocity", "profile", "geo"], rng.randint(1, 3))
        state = with_request(Analysis(f"a-{i}"), {**REQUEST, "expected_agents": expected})
        for agent in expected:
            if rng.random() < 0.8:
                score = rng.choice([0, 1, 0.5, rng.random(), 1e-9])
                picked = rng.sample(codes, rng.randint(0, 3))
                state = with_result(state, answer_of(result(agent, score, *picked)))
        answered_some += bool(state.results)
        latency = rng.choice([0.0, 12.0, rng.uniform(0, 5000), 1234.56789])
        at = "2026-01-01T00:00:00.100Z"
        assert orjson.dumps(decide(state, POLICY, decided_at=at, latency_ms=latency)) == (
            _as_the_model_dumps(state, at, latency)
        ), state
    assert answered_some > 300


def test_the_same_inputs_give_the_same_decision_apart_from_wall_clock_fields():
    state = with_result(with_request(Analysis("a-1"), REQUEST), result("geo", 0.6, "GEO_FAR"))
    a = decide(state, POLICY, decided_at="t1", latency_ms=1)
    b = decide(state, POLICY, decided_at="t2", latency_ms=2)
    for d in (a, b):
        d.pop("decided_at"), d.pop("latency_ms")
    assert a == b


def test_an_answer_keeps_the_agent_its_score_and_each_reasons_code_and_detail():
    raw = {**result("geo", 1, "GEO_FAR"), "features": {"km": 9000}}
    raw["reasons"][0]["weight"] = 3
    assert answer_of(raw) == {
        "agent": "geo",
        "score": 1.0,
        "reasons": (("GEO_FAR", "GEO_FAR fired"),),
    }
    assert answer_of({"agent": "geo", "score": 0.5})["reasons"] == ()


def test_a_request_keeps_its_ids_times_and_expectations_not_the_transaction():
    body = {**REQUEST, "transaction": {"amount": 5.0}, "schema_version": 1}
    assert request_of(body) == {
        "analysis_id": "a-1",
        "transaction_id": "tx-1",
        "account_id": "acct-1",
        "event_time": "2025-01-01T00:00:13Z",
        "requested_at": "2026-01-01T00:00:00Z",
        "requested_ms": 1767225600000,
        "expected_agents": ("velocity", "profile", "geo"),
        "deadline_ms": 500,
    }


def test_what_a_waiting_join_keeps_is_left_alone_by_the_cycle_collector():
    # Held by every undecided join: once looked at, the collector skips it. A
    # collection stops tracking a tuple or dict that holds only untracked
    # objects, so the nesting takes a pass per level.
    request = request_of(REQUEST)
    answer = answer_of(result("geo", 0.9, "GEO_FAR", "GEO_NEW"))
    raw = result("geo", 0.9, "GEO_FAR")  # as it came: its reasons are a list
    for _ in range(3):
        gc.collect()
    assert not gc.is_tracked(request) and not gc.is_tracked(answer)
    assert gc.is_tracked(raw)


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in REQUEST.items() if k != "expected_agents"},
        {k: v for k, v in REQUEST.items() if k != "requested_at"},
        {**REQUEST, "expected_agents": 3},
        {**REQUEST, "expected_agents": ["velocity", 2]},
        {**REQUEST, "deadline_ms": "500"},
        {**REQUEST, "deadline_ms": True},
        {**REQUEST, "requested_at": "yesterday"},
    ],
)
def test_a_malformed_request_is_refused(broken: dict):
    with pytest.raises(ValueError):
        request_of(broken)


@pytest.mark.parametrize(
    "broken",
    [
        {"score": 0.5},
        {"agent": "geo"},
        {"agent": 7, "score": 0.5},
        {"agent": "geo", "score": "0.5"},
        {"agent": "geo", "score": True},
        {"agent": "geo", "score": 0.5, "reasons": [{"code": "X"}]},
        {"agent": "geo", "score": 0.5, "reasons": [{"code": 1, "detail": "d"}]},
        {"agent": "geo", "score": 0.5, "reasons": ["X"]},
        {"agent": "geo", "score": 0.5, "reasons": 3},
    ],
)
def test_a_malformed_answer_is_refused(broken: dict):
    with pytest.raises(ValueError):
        answer_of(broken)


def test_pending_joins_collect_what_to_acknowledge_per_analysis():
    joins = PendingJoins()
    first = joins.add("a-1", partition=2, token="request", now_ms=1_000, stamp_ms=900)
    assert joins.add("a-1", partition=2, token="velocity", now_ms=1_500, stamp_ms=950) is first
    joins.add("a-2", partition=3, token="profile", now_ms=1_200, stamp_ms=1_000)
    assert len(joins) == 2
    assert first.tokens == ["request", "velocity"]
    assert (first.first_seen_ms, first.first_stamp_ms) == (1_000, 900)
    assert joins.pop("a-1") is first and joins.get("a-1") is None and joins.pop("a-1") is None
    assert len(joins) == 1


def test_pending_joins_of_revoked_partitions_are_dropped_and_no_other():
    joins = PendingJoins()
    for i, partition in enumerate([0, 1, 1, 2]):
        joins.add(f"a-{i}", partition, token=i, now_ms=0, stamp_ms=0)
    dropped = joins.drop_partitions({1, 5})
    assert sorted(p.state.analysis_id for p in dropped) == ["a-1", "a-2"]
    assert joins.get("a-0") is not None and joins.get("a-3") is not None
    assert len(joins) == 2


def test_results_without_a_request_are_orphans_after_a_quiet_minute():
    joins = PendingJoins()
    joins.add("results-only", 0, token=1, now_ms=0, stamp_ms=0)
    with_req = joins.add("requested", 0, token=2, now_ms=0, stamp_ms=0)
    with_req.state = with_request(with_req.state, REQUEST)
    joins.add("recent", 0, token=3, now_ms=50_000, stamp_ms=50_000)
    assert [p.state.analysis_id for p in joins.orphans(now_ms=60_000, after_ms=60_000)] == [
        "results-only"
    ]
    assert joins.orphans(now_ms=59_999, after_ms=60_000) == []


def test_results_ahead_of_their_requests_wait_while_requests_are_read():
    # Catching up on a backlog: the results of t=1000 are read at once, while
    # the requests of their partition come in slowly, still from before them.
    joins = PendingJoins()
    joins.add("ahead", 1, token=1, now_ms=0, stamp_ms=1_000)
    for now in range(0, 300_000, 10_000):
        joins.saw_request(1, stamp_ms=now // 1_000, now_ms=now)
        assert joins.orphans(now_ms=now, after_ms=60_000) == [], now
    # Another partition's requests say nothing about this one.
    joins.saw_request(2, stamp_ms=500_000, now_ms=300_000)
    assert joins.orphans(now_ms=300_000, after_ms=60_000) == []
    # Its own requests a minute past its results: its request is not coming.
    joins.saw_request(1, stamp_ms=61_000, now_ms=300_000)
    assert [p.state.analysis_id for p in joins.orphans(300_000, 60_000)] == ["ahead"]
    # ... or no request read for a minute.
    quiet = PendingJoins()
    quiet.add("ahead", 1, token=1, now_ms=0, stamp_ms=1_000)
    quiet.saw_request(1, stamp_ms=0, now_ms=10_000)
    assert quiet.orphans(now_ms=69_999, after_ms=60_000) == []
    assert len(quiet.orphans(now_ms=70_000, after_ms=60_000)) == 1


def test_joins_count_per_partition_what_they_hold_and_what_they_wait_for():
    joins = PendingJoins()
    for i in range(3):
        pending = joins.add(f"r-{i}", 1, token=i, now_ms=0, stamp_ms=0)
        joins.update(pending, with_result(pending.state, {"agent": "geo", "score": 0.1}))
    other = joins.add("other", 2, token=9, now_ms=0, stamp_ms=0)
    joins.update(other, with_request(other.state, REQUEST))
    assert +joins.holding(1) == {"geo": 3} and +joins.waiting(1) == {"request": 3}
    assert joins.holding(2) == {"request": 1}
    assert +joins.waiting(2) == {"velocity": 1, "profile": 1, "geo": 1}
    assert joins.holding(3) == {} and joins.waiting(3) == {}

    first = joins.get("r-0")
    joins.update(first, with_request(first.state, REQUEST))
    joins.update(first, with_request(first.state, REQUEST))  # a redelivered request
    joins.update(first, with_result(first.state, {"agent": "geo", "score": 0.9}))  # and result
    assert +joins.holding(1) == {"geo": 3, "request": 1}
    assert +joins.waiting(1) == {"request": 2, "velocity": 1, "profile": 1}

    joins.pop("r-0")  # decided (or let go)
    joins.pop("r-1")  # an orphan let go
    assert +joins.holding(1) == {"geo": 1} and +joins.waiting(1) == {"request": 1}
    joins.drop_partitions({1})
    assert joins.holding(1) == {} and joins.holding(2) == {"request": 1}


PARTS = ("request", "velocity", "profile", "geo")


def test_an_input_far_ahead_of_the_others_is_held_back_until_half_as_many_joins_hold_it():
    waiting = {"request": 5}  # results came; their requests did not
    assert parts_to_hold({"geo": 9}, waiting, PARTS, limit=10, held=set()) == set()
    assert parts_to_hold({"geo": 10}, waiting, PARTS, limit=10, held=set()) == {"geo"}
    assert parts_to_hold({"geo": 6}, waiting, PARTS, limit=10, held={"geo"}) == {"geo"}
    assert parts_to_hold({"geo": 5}, waiting, PARTS, limit=10, held={"geo"}) == set()


def test_what_most_joins_wait_for_is_never_held_back():
    # Every input is ahead of the limit, but the requests are what the joins
    # need: holding them back too would stop the partition for good.
    holding = {"request": 40, "velocity": 50, "profile": 50, "geo": 50}
    waiting = {"request": 10, "geo": 40}
    assert parts_to_hold(holding, waiting, PARTS, limit=10, held=set()) == {
        "request",
        "velocity",
        "profile",
    }
    # An agent that is not expected is never waited for, so it never decides
    # what may be read, whatever few joins hold it.
    waiting = {"request": 30, "velocity": 0}
    held = parts_to_hold(holding | {"velocity": 0}, waiting, PARTS, limit=10, held=set())
    assert "request" not in held and held == {"profile", "geo"}


def test_results_are_no_orphans_while_this_worker_holds_their_requests_back():
    joins = PendingJoins()
    joins.add("r-1", 1, token=1, now_ms=0, stamp_ms=0)  # a result, its request not read
    joins.add("r-2", 2, token=2, now_ms=0, stamp_ms=0)
    joins.requests_held_back(1, now_ms=60_000)  # partition 1's requests are not fetched
    assert [p.state.analysis_id for p in joins.orphans(now_ms=60_000, after_ms=60_000)] == ["r-2"]
    # Fetched again, and still no request for the whole timeout: an orphan after all.
    assert joins.orphans(now_ms=119_999, after_ms=60_000)[0].state.analysis_id == "r-2"
    assert {p.state.analysis_id for p in joins.orphans(now_ms=120_000, after_ms=60_000)} == {
        "r-1",
        "r-2",
    }


def test_a_revoked_partition_forgets_how_far_its_requests_were_read():
    joins = PendingJoins()
    joins.saw_request(1, stamp_ms=100_000, now_ms=0)
    joins.drop_partitions({1})
    joins.add("new-owner-again", 1, token=1, now_ms=0, stamp_ms=1_000)
    assert joins.orphans(now_ms=1_000, after_ms=60_000) == []


def test_the_counts_kept_step_by_step_equal_the_counts_of_the_joins_held():
    rng = random.Random(3)
    joins = PendingJoins()
    agents = ["velocity", "profile", "geo"]
    for step in range(3000):
        analysis_id = f"a{rng.randrange(60)}"
        partition = int(analysis_id[1:]) % 3
        if rng.random() < 0.1:
            joins.pop(analysis_id)
            continue
        pending = joins.add(analysis_id, partition, step, now_ms=step, stamp_ms=step)
        if rng.random() < 0.3:
            expected = rng.sample(agents, rng.randrange(1, 4))
            request = {"expected_agents": expected, "deadline_ms": 2000}
            joins.update(pending, with_request(pending.state, request))
        else:
            joins.update(pending, with_result(pending.state, {"agent": rng.choice(agents)}))
        for p in range(3):
            held = [j for j in (joins.get(f"a{i}") for i in range(60)) if j and j.partition == p]
            holding = Counter(part for j in held for part in parts_of(j.state))
            waiting = Counter(part for j in held for part in waits_for(j.state))
            assert +joins.holding(p) == holding, step
            assert +joins.waiting(p) == waiting, step


def test_at_the_deadline_only_agents_whose_results_may_still_be_unread_are_waited_for():
    state = with_result(with_request(Analysis("a-1"), REQUEST), result("velocity", 0.1))
    read_up_to = {"profile": 1_000, "geo": 1_600}  # how far each results partition was read
    asked = []

    def read_past(agent: str, at_ms: int) -> bool:
        asked.append(agent)
        return read_up_to[agent] >= at_ms

    assert unread_answers(state, 1_500, read_past) == ["profile"]
    assert asked == ["profile", "geo"]  # the missing agents only, in the expected order
    assert unread_answers(state, 1_000, read_past) == []
    done = with_result(with_result(state, result("profile", 0.0)), result("geo", 0.0))
    assert unread_answers(done, 5_000, read_past) == []


def test_a_partition_is_read_past_a_time_once_a_message_stamped_at_or_after_it_was_read():
    read = ReadPositions()
    assert read.next_offset("agent.geo.results", 1) is None
    assert not read.stamped_past("agent.geo.results", 1, 0)
    read.saw("agent.geo.results", 1, offset=7, stamp_ms=1_000)
    read.saw("agent.geo.results", 1, offset=5, stamp_ms=1_200)  # a redelivery: offsets go back
    read.saw("agent.geo.results", 2, offset=0, stamp_ms=3_000)
    assert read.next_offset("agent.geo.results", 1) == 8
    assert read.stamped_past("agent.geo.results", 1, 1_200)
    assert not read.stamped_past("agent.geo.results", 1, 1_201)
    assert not read.stamped_past("agent.profile.results", 1, 0)
    read.forget({1})
    assert read.next_offset("agent.geo.results", 1) is None
    assert not read.stamped_past("agent.geo.results", 1, 0)
    assert read.next_offset("agent.geo.results", 2) == 1


def test_overdue_joins_come_off_in_deadline_order_as_far_as_their_partition_was_read():
    overdue = OverdueJoins()
    for deadline, analysis_id in [(300, "c"), (100, "a"), (200, "b")]:
        overdue.wait("agent.geo.results", 0, deadline, analysis_id)
    overdue.wait("agent.geo.results", 1, 100, "d")
    overdue.wait("agent.profile.results", 0, 100, "e")
    assert sorted(overdue.partitions()) == [
        ("agent.geo.results", 0),
        ("agent.geo.results", 1),
        ("agent.profile.results", 0),
    ]
    asked: list[int] = []

    def read_to_250(at_ms: int) -> bool:
        asked.append(at_ms)
        return at_ms <= 250

    assert overdue.ready("agent.geo.results", 0, read_to_250) == ["a", "b"]
    assert asked == [100, 200, 300]  # stops at the first deadline not read past
    assert overdue.ready("agent.geo.results", 0, lambda at_ms: True) == ["c"]
    assert ("agent.geo.results", 0) not in overdue.partitions()
    overdue.drop_partitions({1})
    assert overdue.partitions() == [("agent.profile.results", 0)]
    assert overdue.ready("agent.geo.results", 7, lambda at_ms: True) == []
