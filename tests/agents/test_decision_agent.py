"""The decision agent: one decision per analysis, whatever arrives and how often."""

from __future__ import annotations

import heapq

import orjson

from agents import topics
from agents.contracts import analysis_id_for, now_rfc3339
from agents.decision import deadline_tick, due_joins
from apps.decision import create_app
from tables.join_state import PendingJoins
from tests.agents.conftest import Harness
from tests.kafka_helpers import read_topic

AID = analysis_id_for("tx-1")


def request(deadline_ms: int = 60_000) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "analysis_id": AID,
            "transaction_id": "tx-1",
            "account_id": "acct-1",
            "event_time": "2025-01-01T00:00:00Z",
            "requested_at": now_rfc3339(),
            "transaction": {},
            "expected_agents": ["velocity", "profile", "geo"],
            "deadline_ms": deadline_ms,
        }
    )


def result(agent: str, score: float, *codes: str) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "analysis_id": AID,
            "agent": agent,
            "transaction_id": "tx-1",
            "account_id": "acct-1",
            "score": score,
            "reasons": [{"code": c, "detail": c.lower()} for c in codes],
            "features": {},
            "event_time": "2025-01-01T00:00:00Z",
            "processed_at": now_rfc3339(),
        }
    )


async def decisions(settings, until: int = 1, timeout_s: float = 10) -> list:
    return await read_topic(
        settings.bootstrap_servers,
        topics.DECISIONS,
        settings.partitions,
        until=until,
        timeout_s=timeout_s,
    )


def invalid_internal_messages(app) -> dict:
    """riskstream_invalid_internal_messages_total by topic."""
    return {
        s.labels.get("topic"): s.value
        for m in app.prometheus_registry.collect()
        for s in m.samples
        if s.name == "riskstream_invalid_internal_messages_total"
    }


async def test_all_three_answers_make_one_decision_with_every_reason(settings):
    app = create_app(settings)
    async with Harness(app, "join_and_decide") as h:
        key = AID.encode()
        await h.put(result("geo", 0.9, "GEO_IMPOSSIBLE_TRAVEL"), key, topic="agent.geo.results")
        await h.put(request(), key, topic=topics.DECISION_REQUESTS)
        await h.put(result("velocity", 0.0), key, topic="agent.velocity.results")
        await h.put(
            result("profile", 0.2, "PROFILE_NEW_MERCHANT"), key, topic="agent.profile.results"
        )
        await h.flush()
        stored = orjson.loads(app.tables["decisions"][key])["decision"]
    [msg] = await decisions(settings)
    d = msg.json
    assert msg.key == key and d == stored
    assert d["outcome"] == "decline" and d["missing_agents"] == []
    assert {r["code"] for r in d["reasons"]} == {"GEO_IMPOSSIBLE_TRAVEL", "PROFILE_NEW_MERCHANT"}
    assert d["latency_ms"] >= 0


async def test_redelivered_inputs_after_the_decision_publish_nothing_more(settings):
    async with Harness(create_app(settings), "join_and_decide") as h:
        key = AID.encode()
        await h.put(request(), key, topic=topics.DECISION_REQUESTS)
        for agent in ("velocity", "profile", "geo"):
            await h.put(result(agent, 0.1), key, topic=topics.results_topic(agent))
        for agent in ("velocity", "profile", "geo"):
            await h.put(result(agent, 0.9), key, topic=topics.results_topic(agent))
        await h.put(request(), key, topic=topics.DECISION_REQUESTS)
        await h.flush()
    out = await decisions(settings, until=2, timeout_s=3)
    assert len(out) == 1
    assert out[0].json["outcome"] == "approve"


async def test_a_deadline_tick_decides_with_the_missing_agents_named(settings):
    async with Harness(create_app(settings), "join_and_decide") as h:
        key = AID.encode()
        await h.put(request(deadline_ms=1), key, topic=topics.DECISION_REQUESTS)
        await h.put(result("velocity", 0.1), key, topic=topics.results_topic("velocity"))
        tick = orjson.dumps({"analysis_id": AID})
        await h.put(tick, key, topic=topics.DECISION_DEADLINES)
        await h.put(result("geo", 0.9), key, topic=topics.results_topic("geo"))  # too late
        await h.flush()
    [msg] = await decisions(settings)
    assert msg.json["missing_agents"] == ["profile", "geo"]
    assert msg.json["outcome"] == "review"  # missing_agent_policy defaults to review


async def test_a_tick_before_the_deadline_does_not_decide(settings):
    async with Harness(create_app(settings), "join_and_decide") as h:
        key = AID.encode()
        await h.put(request(deadline_ms=60_000), key, topic=topics.DECISION_REQUESTS)
        await h.put(orjson.dumps({"analysis_id": AID}), key, topic=topics.DECISION_DEADLINES)
        await h.flush()
    assert await decisions(settings, until=1, timeout_s=2) == []


async def test_an_unreadable_internal_message_is_counted_and_skipped(settings):
    app = create_app(settings)
    async with Harness(app, "join_and_decide") as h:
        key = AID.encode()
        await h.put(b"{broken", key, topic=topics.results_topic("geo"))
        await h.put(request(), key, topic=topics.DECISION_REQUESTS)
        for agent in ("velocity", "profile", "geo"):
            await h.put(result(agent, 0.0), key, topic=topics.results_topic(agent))
        await h.flush()
    [msg] = await decisions(settings)
    assert msg.json["outcome"] == "approve"
    assert invalid_internal_messages(app) == {"agent.geo.results": 1.0}


async def decided_after_a_stray(settings, app, stray: dict, topic: str):
    """The decision on the analysis once ``stray`` came on ``topic`` ahead of its real messages."""
    async with Harness(app, "join_and_decide") as h:
        key = AID.encode()
        await h.put(orjson.dumps(stray), key, topic=topic)
        await h.put(request(), key, topic=topics.DECISION_REQUESTS)
        for agent in ("velocity", "profile", "geo"):
            await h.put(result(agent, 0.0), key, topic=topics.results_topic(agent))
        await h.flush()
    [msg] = await decisions(settings)
    return msg.json


async def test_a_result_that_is_not_an_answer_is_counted_and_skipped_and_the_real_one_joins(
    settings,
):
    app = create_app(settings)
    broken = orjson.loads(result("geo", 0.9, "GEO_FAR"))
    broken["reasons"] = [{"code": "GEO_FAR"}]  # no detail: nothing to explain a decision with
    decision = await decided_after_a_stray(settings, app, broken, topics.results_topic("geo"))
    # The broken result did not count as geo's answer: the real one, later, did.
    assert decision["outcome"] == "approve" and decision["missing_agents"] == []
    assert decision["agents"]["geo"] == {"score": 0.0, "reasons": []}
    assert invalid_internal_messages(app) == {"agent.geo.results": 1.0}


async def test_a_request_that_cannot_be_joined_is_counted_and_skipped_and_the_real_one_joins(
    settings,
):
    app = create_app(settings)
    broken = orjson.loads(request())
    broken["requested_at"] = "yesterday"  # no deadline could be worked out from it
    decision = await decided_after_a_stray(settings, app, broken, topics.DECISION_REQUESTS)
    assert decision["outcome"] == "approve" and decision["missing_agents"] == []
    assert invalid_internal_messages(app) == {"agent.decision.requests": 1.0}


def test_a_deadline_comes_due_once_for_each_undecided_join_whose_deadline_passed():
    joins = PendingJoins()
    for aid in ("a-due", "a-decided", "a-later", "a-again"):
        joins.add(aid, partition=0, token=None, now_ms=0, stamp_ms=0)
    joins.pop("a-decided")
    due = [(100, "a-due"), (100, "a-decided"), (500, "a-later"), (90, "a-again")]
    heapq.heapify(due)
    heapq.heappush(due, (95, "a-again"))  # a join can be on the heap twice
    assert [p.state.analysis_id for p in due_joins(due, joins, now=100)] == ["a-again", "a-due"]
    assert due == [(500, "a-later")]  # not yet due: stays on the heap
    assert due_joins(due, joins, now=499) == []
    assert [p.state.analysis_id for p in due_joins(due, joins, now=500)] == ["a-later"]
    assert due_joins([(100, "a-due")], joins, now=1_000) == []  # once


def test_a_deadline_tick_is_keyed_by_its_analysis():
    key, value, partition = deadline_tick("a-1", "1970-01-01T00:00:00.100Z")
    assert (key, partition) == (b"a-1", None)
    assert orjson.loads(value) == {"analysis_id": "a-1", "fired_at": "1970-01-01T00:00:00.100Z"}
