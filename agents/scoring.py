"""Pure scoring for the velocity, profile and geo agents, with stable reason codes.

Each rule that fires adds a Reason with a fixed weight, and an agent's score is
the noisy-or of the fired weights: ``1 - prod(1 - weight)``. That keeps the
score in [0, 1], makes it grow with every extra reason, and lets one strong
reason alone reach the decline threshold (0.8) while weak ones only add up.

Reason codes are part of the public contract: rename one and every consumer's
dashboards and rules break. Thresholds live in the *Rules dataclasses so the
settings object can tune them without touching this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agents.contracts import Reason
from tables.geo_state import GeoObservation
from tables.profile_state import Profile

HOUR_MS = 3_600_000

Features = dict[str, float | int | None]


@dataclass(frozen=True, slots=True)
class VelocityRules:
    burst_count_1m: int = 3  # transactions on the account within 1 min, this one included
    burst_count_10m: int = 5
    amount_1h: float = 3000.0  # total spent in 1 h, fires when exceeded
    distinct_merchants_1h: int = 5
    merchant_distinct_accounts_1h: int = 20  # accounts seen at this transaction's merchant


@dataclass(frozen=True, slots=True)
class ProfileRules:
    warmup_count: int = 5  # past transactions needed before any profile reason fires
    zscore_review: float = 3.0
    # Floor on the std used for the z-score, as a share of the mean: an account
    # that always spends exactly 10.00 would otherwise flag 10.50 as a 1000-sigma event.
    zscore_min_std_share: float = 0.1
    spike_ratio: float = 5.0  # fires when amount > spike_ratio * mean
    unusual_hour_share: float = 0.02  # fires when the hour held less than this share
    # A share of 24 buckets means little on a handful of transactions.
    unusual_hour_min_count: int = 20


@dataclass(frozen=True, slots=True)
class GeoRules:
    impossible_travel_kmh: float = 900.0  # faster than an airliner
    # Locations are often city-level, so short hops are noise whatever the speed.
    impossible_travel_min_km: float = 50.0
    far_from_home_km: float = 500.0
    billing_shipping_km: float = 1000.0


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    reasons: list[Reason]  # strongest first
    features: Features


REASON_WEIGHTS: dict[str, float] = {
    "VELOCITY_BURST_1M": 0.85,
    "VELOCITY_BURST_10M": 0.85,
    "VELOCITY_AMOUNT_1H": 0.5,
    "VELOCITY_MANY_MERCHANTS_1H": 0.5,
    "VELOCITY_MERCHANT_MANY_ACCOUNTS_1H": 0.6,
    "PROFILE_AMOUNT_ZSCORE": 0.6,
    "PROFILE_AMOUNT_SPIKE": 0.85,
    "PROFILE_NEW_MERCHANT": 0.15,
    "PROFILE_UNUSUAL_HOUR": 0.2,
    "PROFILE_NEW_CHANNEL": 0.2,
    "GEO_IMPOSSIBLE_TRAVEL": 0.9,
    "GEO_FAR_FROM_HOME": 0.4,
    "GEO_BILLING_SHIPPING_MISMATCH": 0.45,
}

_V, _P, _G = VelocityRules(), ProfileRules(), GeoRules()
_WARM = f", once the account has {_P.warmup_count} past transactions"
# Descriptions quote the default thresholds; deployments may tune them.
REASON_CODES: dict[str, str] = {
    "VELOCITY_BURST_1M": f"at least {_V.burst_count_1m} transactions on the account within 1 min",
    "VELOCITY_BURST_10M": f"at least {_V.burst_count_10m} transactions on the account within 10 min",
    "VELOCITY_AMOUNT_1H": f"more than {_V.amount_1h:g} spent by the account within 1 h",
    "VELOCITY_MANY_MERCHANTS_1H": f"at least {_V.distinct_merchants_1h} distinct merchants used by the account within 1 h",
    "VELOCITY_MERCHANT_MANY_ACCOUNTS_1H": f"at least {_V.merchant_distinct_accounts_1h} distinct accounts at the merchant within 1 h",
    "PROFILE_AMOUNT_ZSCORE": f"amount at least {_P.zscore_review:g} standard deviations above the account's mean{_WARM}",
    "PROFILE_AMOUNT_SPIKE": f"amount more than {_P.spike_ratio:g} times the account's mean{_WARM}",
    "PROFILE_NEW_MERCHANT": f"first transaction of the account at this merchant{_WARM}",
    "PROFILE_UNUSUAL_HOUR": f"UTC hour of day that held less than {_P.unusual_hour_share:.0%} of the account's transactions, once it has {_P.unusual_hour_min_count} past transactions",
    "PROFILE_NEW_CHANNEL": f"first transaction of the account on this channel{_WARM}",
    "GEO_IMPOSSIBLE_TRAVEL": f"at least {_G.impossible_travel_min_km:g} km from the last location at more than {_G.impossible_travel_kmh:g} km/h",
    "GEO_FAR_FROM_HOME": f"more than {_G.far_from_home_km:g} km from the account's home",
    "GEO_BILLING_SHIPPING_MISMATCH": f"card-not-present with billing and shipping more than {_G.billing_shipping_km:g} km apart",
}


def _scored(fired: list[Reason], features: Features) -> Scored:
    fired.sort(key=lambda r: -REASON_WEIGHTS[r.code])  # stable: ties keep rule order
    keep = math.prod(1.0 - REASON_WEIGHTS[r.code] for r in fired)
    return Scored(score=round(1.0 - keep, 4), reasons=fired, features=features)


def score_velocity(
    account_windows: dict[str, dict[str, Any]],
    merchant_windows: dict[str, dict[str, Any]] | None,
    rules: VelocityRules,
) -> Scored:
    """Score from tables.windows.account_windows / merchant_windows as of the transaction."""
    w1m, w10m, w1h, w24h = (account_windows[k] for k in ("1m", "10m", "1h", "24h"))
    m1h = merchant_windows["1h"] if merchant_windows else None
    m24h = merchant_windows["24h"] if merchant_windows else None
    features: Features = {
        "count_1m": w1m["count"],
        "count_10m": w10m["count"],
        "count_1h": w1h["count"],
        "count_24h": w24h["count"],
        "amount_1h": w1h["sum"],
        "amount_24h": w24h["sum"],
        "max_amount_1h": w1h["max"],
        "distinct_merchants_1h": w1h["distinct_merchants"],
        "distinct_merchants_24h": w24h["distinct_merchants"],
        "merchant_count_1h": m1h["count"] if m1h else None,
        "merchant_accounts_1h": m1h["distinct_accounts"] if m1h else None,
        "merchant_accounts_24h": m24h["distinct_accounts"] if m24h else None,
    }
    fired: list[Reason] = []
    if w1m["count"] >= rules.burst_count_1m:
        fired.append(
            Reason(code="VELOCITY_BURST_1M", detail=f"{w1m['count']} transactions in 1 min")
        )
    if w10m["count"] >= rules.burst_count_10m:
        fired.append(
            Reason(code="VELOCITY_BURST_10M", detail=f"{w10m['count']} transactions in 10 min")
        )
    if w1h["sum"] > rules.amount_1h:
        fired.append(
            Reason(
                code="VELOCITY_AMOUNT_1H",
                detail=f"{w1h['sum']:.2f} spent in 1 h over {w1h['count']} transactions",
            )
        )
    if w1h["distinct_merchants"] >= rules.distinct_merchants_1h:
        fired.append(
            Reason(
                code="VELOCITY_MANY_MERCHANTS_1H",
                detail=f"{w1h['distinct_merchants']} distinct merchants in 1 h",
            )
        )
    if m1h and m1h["distinct_accounts"] >= rules.merchant_distinct_accounts_1h:
        fired.append(
            Reason(
                code="VELOCITY_MERCHANT_MANY_ACCOUNTS_1H",
                detail=f"{m1h['distinct_accounts']} distinct accounts at the merchant in 1 h",
            )
        )
    return _scored(fired, features)


def score_profile(
    before: Profile | None,
    *,
    amount: float,
    merchant_id: str,
    channel: str | None,
    merchant_category: str | None,
    time_ms: int,
    rules: ProfileRules,
) -> Scored:
    """Score a transaction against the account's profile as it was before it."""
    hour = (time_ms // HOUR_MS) % 24
    n = before.count if before else 0
    features: Features = {
        "profile_count": n,
        "mean_amount": None,
        "std_amount": None,
        "amount_zscore": None,
        "amount_ratio": None,
        "hour_utc": hour,
        "hour_share": None,
        "merchant_count": 0,
        "channel_count": None,
        "category_count": None,
    }
    if before is None or n == 0:
        return _scored([], features)

    mean, std = before.mean_amount, before.std_amount
    # The floored std: see ProfileRules.zscore_min_std_share.
    zscore = (amount - mean) / max(std, rules.zscore_min_std_share * mean, 1e-9)
    ratio = amount / mean if mean > 0 else None
    hour_share = before.hours[hour] / n
    merchant_count = before.merchants.get(merchant_id, 0)
    channel_count = before.channels.get(channel, 0) if channel is not None else None
    features.update(
        mean_amount=round(mean, 2),
        std_amount=round(std, 2),
        amount_zscore=round(zscore, 3),
        amount_ratio=round(ratio, 3) if ratio is not None else None,
        hour_share=round(hour_share, 4),
        merchant_count=merchant_count,
        channel_count=channel_count,
        category_count=(
            before.categories.get(merchant_category, 0) if merchant_category is not None else None
        ),
    )
    # A young account has not shown what normal is yet: flagging everything it
    # does as new would only teach reviewers to ignore these reasons.
    if n < rules.warmup_count:
        return _scored([], features)

    fired: list[Reason] = []
    if zscore >= rules.zscore_review:
        fired.append(
            Reason(
                code="PROFILE_AMOUNT_ZSCORE",
                detail=f"amount {amount:.2f} is {zscore:.1f} std above the mean {mean:.2f}",
            )
        )
    if ratio is not None and ratio > rules.spike_ratio:
        fired.append(
            Reason(
                code="PROFILE_AMOUNT_SPIKE",
                detail=f"amount {amount:.2f} is {ratio:.1f}x the mean {mean:.2f}",
            )
        )
    if merchant_count == 0:
        fired.append(
            Reason(
                code="PROFILE_NEW_MERCHANT",
                detail=f"first transaction at merchant {merchant_id} after {n}",
            )
        )
    if n >= rules.unusual_hour_min_count and hour_share < rules.unusual_hour_share:
        fired.append(
            Reason(
                code="PROFILE_UNUSUAL_HOUR",
                detail=f"{hour:02d}:00 UTC held {hour_share:.0%} of {n} past transactions",
            )
        )
    # An account whose channel was never reported has no channel habit to break.
    if channel_count == 0 and before.channels:
        fired.append(
            Reason(code="PROFILE_NEW_CHANNEL", detail=f"first {channel} transaction after {n}")
        )
    return _scored(fired, features)


def _minutes(minutes: float) -> str:
    if minutes < 1:
        return "under 1 min"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def score_geo(obs: GeoObservation, rules: GeoRules) -> Scored:
    """Score a geo observation (tables.geo_state.observe, taken before applying)."""
    features: Features = {
        "distance_from_home_km": _r(obs.distance_from_home_km),
        "distance_from_last_km": _r(obs.distance_from_last_km),
        "minutes_since_last": _r(obs.minutes_since_last),
        "speed_kmh": _r(obs.speed_kmh),
        "billing_shipping_km": _r(obs.billing_shipping_km),
    }
    fired: list[Reason] = []
    travelled, speed = obs.distance_from_last_km, obs.speed_kmh
    if (
        travelled is not None
        and speed is not None
        and travelled >= rules.impossible_travel_min_km
        and speed > rules.impossible_travel_kmh
    ):
        fired.append(
            Reason(
                code="GEO_IMPOSSIBLE_TRAVEL",
                detail=f"{travelled:.0f} km in {_minutes(obs.minutes_since_last or 0.0)} ({speed:.0f} km/h)",
            )
        )
    home = obs.distance_from_home_km
    if home is not None and home > rules.far_from_home_km:
        fired.append(Reason(code="GEO_FAR_FROM_HOME", detail=f"{home:.0f} km from home"))
    apart = obs.billing_shipping_km
    if apart is not None and apart > rules.billing_shipping_km:
        fired.append(
            Reason(
                code="GEO_BILLING_SHIPPING_MISMATCH",
                detail=f"billing and shipping addresses {apart:.0f} km apart",
            )
        )
    return _scored(fired, features)
