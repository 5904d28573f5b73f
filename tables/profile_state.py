"""Each account's spending profile: what a normal transaction looks like for it.

Amount statistics use Welford's running mean and variance, so the profile never
keeps the amounts themselves and stays numerically stable over millions of
updates. Hours are bucketed by the UTC hour of the event time, so a replay gives
the same profile as the live run. Apply each transaction once: the profile keeps
no transaction ids and would count a redelivery twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from agents.contracts import ms_to_rfc3339

HOUR_MS = 3_600_000
TOP_N = 5


@dataclass(slots=True)
class Profile:
    count: int = 0
    mean_amount: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean (Welford)
    max_amount: float = 0.0
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # by UTC hour of event time
    # Bounded by max_tracked so a card used at thousands of merchants stays small.
    channels: dict[str, int] = field(default_factory=dict)
    merchants: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    first_seen_ms: int = 0
    last_seen_ms: int = 0

    @property
    def std_amount(self) -> float:
        """Population standard deviation of the amounts."""
        if self.count < 2:
            return 0.0
        return math.sqrt(max(self.m2, 0.0) / self.count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean_amount": self.mean_amount,
            "m2": self.m2,
            "max_amount": self.max_amount,
            "hours": list(self.hours),
            "channels": dict(self.channels),
            "merchants": dict(self.merchants),
            "categories": dict(self.categories),
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(
            count=int(d["count"]),
            mean_amount=float(d["mean_amount"]),
            m2=float(d["m2"]),
            max_amount=float(d["max_amount"]),
            hours=[int(h) for h in d["hours"]],
            channels={str(k): int(v) for k, v in d["channels"].items()},
            merchants={str(k): int(v) for k, v in d["merchants"].items()},
            categories={str(k): int(v) for k, v in d["categories"].items()},
            first_seen_ms=int(d["first_seen_ms"]),
            last_seen_ms=int(d["last_seen_ms"]),
        )


def apply_transaction(
    profile: Profile | None,
    *,
    time_ms: int,
    amount: float,
    merchant_id: str,
    channel: str | None,
    merchant_category: str | None,
    max_tracked: int = 50,
) -> Profile:
    """The profile after one more transaction; the input is never mutated."""
    amount = float(amount)
    if profile is None or profile.count == 0:
        first_seen_ms = last_seen_ms = time_ms
        count, mean, m2, max_amount = 0, 0.0, 0.0, amount
        hours = [0] * 24
        channels: dict[str, int] = {}
        merchants: dict[str, int] = {}
        categories: dict[str, int] = {}
    else:
        # min/max, not "latest": transactions may arrive out of event-time order.
        first_seen_ms = min(profile.first_seen_ms, time_ms)
        last_seen_ms = max(profile.last_seen_ms, time_ms)
        count, mean, m2 = profile.count, profile.mean_amount, profile.m2
        max_amount = max(profile.max_amount, amount)
        hours = profile.hours.copy()
        channels = profile.channels.copy()
        merchants = profile.merchants.copy()
        categories = profile.categories.copy()

    count += 1
    delta = amount - mean
    mean += delta / count
    m2 += delta * (amount - mean)
    hours[(time_ms // HOUR_MS) % 24] += 1
    if channel is not None:
        _bump(channels, channel, max_tracked)
    _bump(merchants, merchant_id, max_tracked)
    if merchant_category is not None:
        _bump(categories, merchant_category, max_tracked)

    return Profile(
        count=count,
        mean_amount=mean,
        m2=m2,
        max_amount=max_amount,
        hours=hours,
        channels=channels,
        merchants=merchants,
        categories=categories,
        first_seen_ms=first_seen_ms,
        last_seen_ms=last_seen_ms,
    )


def _bump(counts: dict[str, int], key: str, max_tracked: int) -> None:
    if key not in counts and counts and len(counts) >= max_tracked:
        # The rarest entry goes; ties by name so every replica evicts the same one.
        del counts[min(counts, key=lambda k: (counts[k], k))]
    counts[key] = counts.get(key, 0) + 1


def _top(counts: dict[str, int], n: int = TOP_N) -> list[str]:
    return sorted(counts, key=lambda k: (-counts[k], k))[:n]


def profile_view(profile: Profile, account_id: str) -> dict[str, Any]:
    """The body of ``GET /accounts/{account_id}/profile``."""
    return {
        "account_id": account_id,
        "count": profile.count,
        "mean_amount": round(profile.mean_amount, 2),
        "std_amount": round(profile.std_amount, 2),
        "max_amount": round(profile.max_amount, 2),
        "first_seen": ms_to_rfc3339(profile.first_seen_ms),
        "last_seen": ms_to_rfc3339(profile.last_seen_ms),
        "channels": dict(profile.channels),
        "top_merchants": _top(profile.merchants),
        "top_categories": _top(profile.categories),
        "hours": list(profile.hours),
    }
