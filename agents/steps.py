"""One agent step: (state before, transaction) -> state after and a score. Pure.

Profile and geo score a transaction against the state as it was *before* it,
then fold it in; velocity counts it first and scores the windows that include it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.contracts import Location, Reason, TransactionFields
from agents.scoring import GeoRules, ProfileRules, Scored, score_geo, score_profile
from tables import geo_state, profile_state
from tables.geo_state import GeoState
from tables.profile_state import Profile


@dataclass(frozen=True, slots=True)
class Step:
    state: dict[str, Any]  # the new state, JSON-serialisable
    score: float
    reasons: list[Reason]
    features: dict[str, Any]
    late: bool = False


def _step(state: dict[str, Any], scored: Scored, late: bool = False) -> Step:
    return Step(state, scored.score, list(scored.reasons), dict(scored.features), late)


def profile_step(state: dict[str, Any] | None, tx: TransactionFields, rules: ProfileRules) -> Step:
    before = Profile.from_dict(state) if state else None
    time_ms = tx.event_time_ms
    scored = score_profile(
        before,
        amount=tx.amount,
        merchant_id=tx.merchant_id,
        channel=tx.channel,
        merchant_category=tx.merchant_category,
        time_ms=time_ms,
        rules=rules,
    )
    after = profile_state.apply_transaction(
        before,
        time_ms=time_ms,
        amount=tx.amount,
        merchant_id=tx.merchant_id,
        channel=tx.channel,
        merchant_category=tx.merchant_category,
    )
    # An event older than the newest one seen is still folded in (a profile is
    # order-free) but reported, like velocity's late events.
    late = before is not None and time_ms < before.last_seen_ms
    return _step(after.to_dict(), scored, late)


def _latlon(loc: Location | None) -> tuple[float, float] | None:
    return (float(loc.lat), float(loc.lon)) if loc is not None else None


def geo_step(state: dict[str, Any] | None, tx: TransactionFields, rules: GeoRules) -> Step:
    before = GeoState.from_dict(state) if state else None
    where = {
        "time_ms": tx.event_time_ms,
        "location": _latlon(tx.location),
        "billing": _latlon(tx.billing_location),
        "shipping": _latlon(tx.shipping_location),
        "channel": tx.channel,
    }
    scored = score_geo(geo_state.observe(before, **where), rules)
    after = geo_state.apply_transaction(before, **where)
    late = bool(before and before.last_time_ms and where["time_ms"] < before.last_time_ms)
    return _step(after.to_dict(), scored, late)
