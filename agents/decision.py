"""Decision wiring: join the request and agent results by analysis_id, decide once.

Every input is keyed by analysis_id and has the same partition count, so the
request, the three results and the deadline tick of one analysis meet in one
partition, in one worker, in one table row.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Any

import faust
import orjson

from agents import topics
from agents.contracts import AGENT_NAMES, ms_to_rfc3339, now_ms, rfc3339_to_ms
from agents.decide import Policy, decide
from apps.metrics import Metrics
from apps.settings import Settings
from tables.decision import DecisionTables
from tables.join_state import Analysis, complete, with_request, with_result

log = logging.getLogger(__name__)

RESULT_TOPICS = {topics.results_topic(a): a for a in AGENT_NAMES}
# How often a worker looks through its pending analyses for deadlines it has not
# scheduled (after a restart or a rebalance handed it new partitions).
RESCAN_INTERVAL_S = 2.0


def policy_from(settings: Settings) -> Policy:
    return Policy(
        weights=settings.agent_weights,
        review_threshold=settings.review_threshold,
        decline_threshold=settings.decline_threshold,
        missing_agent_policy=settings.missing_agent_policy,
    )


def register(
    app: faust.App,
    settings: Settings,
    tables: DecisionTables,
    metrics: Metrics,
    on_decided: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """`on_decided` sees every published decision (the Redis read model); it must not block."""
    policy = policy_from(settings)
    inputs = app.topic(topics.DECISION_REQUESTS, *RESULT_TOPICS, topics.DECISION_DEADLINES)
    deadlines = app.topic(topics.DECISION_DEADLINES)
    decisions_out = app.topic(topics.DECISIONS)
    pending, decided = tables.pending_analyses, tables.decisions
    due: list[tuple[int, str]] = []  # (deadline epoch ms, analysis_id), a heap
    scheduled: set[str] = set()

    wait_for_all = settings.decision_mode == "wait_for_all"

    def schedule(state: Analysis) -> None:
        if wait_for_all or state.request is None or state.analysis_id in scheduled:
            return
        heapq.heappush(due, (_deadline_ms(state), state.analysis_id))
        scheduled.add(state.analysis_id)

    async def join_and_decide(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            position = [msg.topic, msg.partition, msg.offset]
            try:
                body: dict[str, Any] = orjson.loads(event.value)
                analysis_id: str = body["analysis_id"]
            except Exception as exc:  # an internal topic, but never crash on input
                metrics.invalid_internal.labels(msg.topic).inc()
                log.error("unreadable message at %s: %r", msg.tp, exc)
                continue
            key = analysis_id.encode()
            done = decided.get(key)
            if done is not None:
                record = orjson.loads(done)
                if record["decided_by"] == position:
                    # The message that made the decision came again (we crashed
                    # before committing it): publish the same decision again.
                    await decisions_out.send(key=key, value=orjson.dumps(record["decision"]))
                    if on_decided is not None:
                        on_decided(record["decision"])
                elif msg.topic in RESULT_TOPICS:
                    metrics.late_results.labels(RESULT_TOPICS[msg.topic]).inc()
                continue

            raw_state = pending.get(key)
            state = (
                Analysis.from_dict(orjson.loads(raw_state)) if raw_state else Analysis(analysis_id)
            )
            if msg.topic == topics.DECISION_REQUESTS:
                # The decision needs the ids, times and expectations, not the
                # transaction itself: keep the join state small, it is rewritten
                # with every answer.
                body.pop("transaction", None)
                state = with_request(state, body)
            elif msg.topic in RESULT_TOPICS:
                state = with_result(state, body)

            now = now_ms()
            deadline_passed = (
                not wait_for_all
                and msg.topic == topics.DECISION_DEADLINES
                and state.request is not None
                and now >= _deadline_ms(state)
            )
            if complete(state) or deadline_passed:
                requested_ms = _requested_ms(state)
                decision = decide(
                    state,
                    policy,
                    decided_at=ms_to_rfc3339(now),
                    latency_ms=float(now - requested_ms),
                )
                doc = decision.model_dump(mode="json")
                decided[key] = orjson.dumps({"decision": doc, "decided_by": position})
                if raw_state is not None:
                    del pending[key]
                scheduled.discard(analysis_id)
                await decisions_out.send(key=key, value=orjson.dumps(doc))
                if on_decided is not None:
                    on_decided(doc)
                metrics.decisions.labels(decision.outcome).inc()
                metrics.decision_latency.observe(max(0.0, decision.latency_ms) / 1000.0)
                for agent in decision.missing_agents:
                    metrics.missing_agents.labels(agent).inc()
            else:
                pending[key] = orjson.dumps(state.to_dict())
                schedule(state)

    app.agent(inputs, name="join_and_decide")(join_and_decide)

    @app.timer(interval=settings.deadline_check_interval_ms / 1000.0)
    async def fire_deadlines() -> None:
        # Tables may only change inside a stream, so a deadline is a message.
        now = now_ms()
        while due and due[0][0] <= now:
            _, analysis_id = heapq.heappop(due)
            if analysis_id not in scheduled:
                continue  # decided before its deadline: no tick needed
            scheduled.discard(analysis_id)
            await deadlines.send(
                key=analysis_id.encode(),
                value=orjson.dumps({"analysis_id": analysis_id, "fired_at": ms_to_rfc3339(now)}),
            )

    @app.timer(interval=RESCAN_INTERVAL_S)
    async def rescan_pending() -> None:
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        for _, raw in pending.items():
            state = Analysis.from_dict(orjson.loads(raw))
            schedule(state)


def _requested_ms(state: Analysis) -> int:
    assert state.request is not None
    return rfc3339_to_ms(state.request["requested_at"])


def _deadline_ms(state: Analysis) -> int:
    return state.deadline_at_ms(_requested_ms(state))
