"""The agents' results: AgentResult's JSON, byte for byte."""

from __future__ import annotations

from functools import partial

import orjson
import pytest

from agents.account_agent import parse_request
from agents.contracts import AgentResult, Reason, Transaction
from agents.demo import DemoConfig, generate
from agents.fanout import fan_out
from agents.results import agent_result
from agents.scoring import GeoRules, ProfileRules, VelocityRules, score_velocity
from agents.steps import geo_step, profile_step

AT = "2026-12-02T00:00:00.456Z"


def _as_the_model_dumps(agent: str, request: dict, **fields: object) -> bytes:
    result = AgentResult(
        analysis_id=request["analysis_id"],
        agent=agent,
        transaction_id=request["transaction_id"],
        account_id=request["account_id"],
        event_time=request["event_time"],
        processed_at=AT,
        score=min(1.0, max(0.0, fields.pop("score"))),  # type: ignore[call-overload]
        **fields,  # type: ignore[arg-type]
    )
    return orjson.dumps(result.model_dump(mode="json"))


def _windows(count: int, total: float, merchants: int) -> dict:
    one = {
        "count": count,
        "sum": total,
        "max": total / max(count, 1),
        "distinct_merchants": merchants,
        "distinct_accounts": merchants,
    }
    return {k: dict(one) for k in ("1m", "10m", "1h", "24h")}


def test_results_are_the_models_json_for_every_agent_and_score():
    steps = {
        "profile": partial(profile_step, rules=ProfileRules()),
        "geo": partial(geo_step, rules=GeoRules()),
    }
    states: dict[str, dict] = {agent: {} for agent in steps}
    with_reasons = 0
    for body in generate(DemoConfig(seed=5, transactions=800)):
        tx = Transaction.model_validate(body)
        out = fan_out(tx, requested_at=AT, expected_agents=["geo"], deadline_ms=900)
        request = orjson.loads(out.agent_request)
        for agent, step in steps.items():
            stepped = step(states[agent].get(tx.account_id), tx)
            states[agent][tx.account_id] = stepped.state
            with_reasons += bool(stepped.reasons)
            # The step's own score, and scores the result clamps, an int among them.
            for score in (stepped.score, -0.25, 1.5, 0, 1):
                made = agent_result(
                    agent,
                    request,
                    score=score,
                    reasons=stepped.reasons,
                    features=stepped.features,
                    processed_at=AT,
                )
                assert orjson.dumps(made) == _as_the_model_dumps(
                    agent,
                    request,
                    score=score,
                    reasons=stepped.reasons,
                    features=stepped.features,
                ), (agent, body)
    assert with_reasons > 10  # the demo's fraud episodes fire reasons
    for windows, merchant in (
        (_windows(40, 9000.5, 12), None),
        (_windows(1, 5.0, 1), _windows(3, 7, 2)),
    ):
        scored = score_velocity(windows, merchant, VelocityRules())
        made = agent_result(
            "velocity",
            request,
            score=scored.score,
            reasons=list(scored.reasons),
            features=dict(scored.features),
            processed_at=AT,
        )
        assert orjson.dumps(made) == _as_the_model_dumps(
            "velocity",
            request,
            score=scored.score,
            reasons=list(scored.reasons),
            features=dict(scored.features),
        )


def test_a_result_keeps_a_reasons_code_and_detail_only():
    request = {"analysis_id": "a", "transaction_id": "t", "account_id": "c", "event_time": AT}
    made = agent_result(
        "geo",
        request,
        score=0.5,
        reasons=[Reason(code="GEO_FAR", detail="far")],
        features={},
        processed_at=AT,
    )
    assert made["reasons"] == [{"code": "GEO_FAR", "detail": "far"}]
    assert made["score"] == 0.5 and made["schema_version"] == 1


def test_what_an_agent_reads_of_a_request_steps_as_the_validated_transaction():
    # The agents check only the shape of the orchestrator's normalised
    # transaction (RequestedTransaction); every step must come out the same.
    steps = {
        "profile": partial(profile_step, rules=ProfileRules()),
        "geo": partial(geo_step, rules=GeoRules()),
    }
    states: dict[str, dict] = {agent: {} for agent in steps}
    for body in generate(DemoConfig(seed=7, transactions=600)):
        tx = Transaction.model_validate(body)
        request, read = parse_request(
            fan_out(tx, requested_at=AT, expected_agents=[], deadline_ms=900).agent_request
        )
        assert read.event_time_ms == tx.event_time_ms and read.amount == tx.amount
        for agent, step in steps.items():
            before = states[agent].get(tx.account_id)
            stepped = step(before, read)
            assert stepped == step(before, tx), (agent, body)
            states[agent][tx.account_id] = stepped.state
    assert states["geo"] and states["profile"]


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "12.5"},
        {"amount": True},
        {"account_id": 42},
        {"timestamp": "yesterday"},
        {"timestamp": 1700000000},
        {"channel": "telepathy"},
        {"location": {"lat": 91, "lon": 0}},
        {"location": {"lat": "1", "lon": 0}},
        {"merchant_id": None},
    ],
)
def test_a_request_whose_transaction_is_not_the_orchestrators_is_unreadable(change):
    tx = Transaction.model_validate(next(iter(generate(DemoConfig(seed=3, transactions=1)))))
    body = orjson.loads(
        fan_out(tx, requested_at=AT, expected_agents=[], deadline_ms=900).agent_request
    )
    parse_request(orjson.dumps(body))  # as sent, it reads
    body["transaction"].update(change)
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        parse_request(orjson.dumps(body))
