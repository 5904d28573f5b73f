"""Velocity wiring, two stages: per-account windows, then per-merchant windows and the score.

Stage one runs on agent.velocity.requests (keyed by account_id) and forwards the
request with the account's windows to riskstream.velocity.by-merchant, keyed by
merchant_id, so that each merchant's windows live in one partition too.
"""

from __future__ import annotations

import logging

import faust
import orjson

from agents import topics
from agents.account_agent import parse_request
from agents.contracts import now_rfc3339, rfc3339_to_ms
from agents.results import agent_result
from agents.scoring import VelocityRules, score_velocity
from apps.metrics import Metrics
from apps.settings import Settings
from tables.agents import VelocityTables
from tables.windows import (
    AccountVelocity,
    MerchantVelocity,
    account_windows,
    apply_account_event,
    apply_merchant_event,
    merchant_windows,
)

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, tables: VelocityTables, metrics: Metrics) -> None:
    requests = app.topic(topics.requests_topic("velocity"))
    by_merchant = app.topic(topics.VELOCITY_BY_MERCHANT)
    results = app.topic(topics.results_topic("velocity"))
    rules = VelocityRules()
    lateness_ms = settings.allowed_lateness_s * 1000

    def unreadable(event: faust.EventT, exc: Exception) -> None:
        metrics.invalid_internal.labels(event.message.topic).inc()
        log.error("unreadable message at %s: %r", event.message.tp, exc)

    @app.agent(requests, name="count_account_velocity")
    async def count_account_velocity(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                request, tx = parse_request(event.value)
            except Exception as exc:
                unreadable(event, exc)
                continue
            key, time_ms = tx.account_id.encode(), tx.event_time_ms
            raw = tables.account_velocity.get(key)
            before = AccountVelocity.from_dict(orjson.loads(raw)) if raw else None
            applied = apply_account_event(
                before,
                time_ms=time_ms,
                transaction_id=tx.transaction_id,
                amount=tx.amount,
                merchant_id=tx.merchant_id,
                max_events=settings.max_events_per_account,
                allowed_lateness_ms=lateness_ms,
            )
            if applied.duplicate:
                metrics.duplicates.labels("velocity").inc()
            else:
                tables.account_velocity[key] = orjson.dumps(applied.state.to_dict())
            if applied.late:
                metrics.late_events.labels("velocity").inc()
            # A copy is forwarded too: stage two answers it with the result the
            # first one got (or, if that one never got that far, computes it).
            forward = {
                "request": request,
                "account_windows": account_windows(applied.state, time_ms),
                "duplicate": applied.duplicate,
            }
            await by_merchant.send(key=tx.merchant_id.encode(), value=orjson.dumps(forward))

    @app.agent(by_merchant, name="score_velocity")
    async def score_merchant_velocity(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                forward = orjson.loads(event.value)
                request = forward["request"]
                tx = request["transaction"]
                time_ms = rfc3339_to_ms(request["event_time"])  # normalised by the orchestrator
            except Exception as exc:
                unreadable(event, exc)
                continue
            analysis_key = request["analysis_id"].encode()
            previous = tables.results.get(tx["transaction_id"].encode())
            if previous is not None:
                # A copy: answer with the very result the first one got.
                await results.send(key=analysis_key, value=previous)
                continue
            key = tx["merchant_id"].encode()
            raw = tables.merchant_velocity.get(key)
            before = MerchantVelocity.from_dict(orjson.loads(raw)) if raw else None
            applied = apply_merchant_event(
                before,
                time_ms=time_ms,
                transaction_id=tx["transaction_id"],
                account_id=tx["account_id"],
                max_events=settings.max_events_per_merchant,
                allowed_lateness_ms=lateness_ms,
            )
            if not applied.duplicate:
                tables.merchant_velocity[key] = orjson.dumps(applied.state.to_dict())
            scored = score_velocity(
                forward["account_windows"], merchant_windows(applied.state, time_ms), rules
            )
            result = agent_result(
                "velocity",
                request,
                score=scored.score,
                reasons=list(scored.reasons),
                features=dict(scored.features),
                processed_at=now_rfc3339(),
            )
            encoded = orjson.dumps(result)
            tables.results[tx["transaction_id"].encode()] = encoded
            metrics.agent_results.labels("velocity").inc()
            metrics.agent_scores.labels("velocity").observe(result["score"])
            await results.send(key=analysis_key, value=encoded)
