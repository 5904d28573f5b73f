"""Each account's geography: where home is, where the card was last seen, how fast it moved.

Positions are ``(lat, lon)`` tuples in degrees. Observations are always taken
against the state before the transaction, so a transaction is never compared
with itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from agents.contracts import ms_to_rfc3339

LatLon = tuple[float, float]

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
# Two events a few seconds apart would otherwise give an absurd speed from
# nothing more than location noise.
MIN_ELAPSED_MS = MINUTE_MS


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    # min() guards against rounding just above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class GeoState:
    home_lat: float | None = None
    home_lon: float | None = None
    home_source: str = "none"  # "billing" | "centroid" | "none"
    centroid_lat: float | None = None
    centroid_lon: float | None = None
    centroid_n: int = 0
    last_lat: float | None = None
    last_lon: float | None = None
    last_time_ms: int | None = None
    last_speed_kmh: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "home_lat": self.home_lat,
            "home_lon": self.home_lon,
            "home_source": self.home_source,
            "centroid_lat": self.centroid_lat,
            "centroid_lon": self.centroid_lon,
            "centroid_n": self.centroid_n,
            "last_lat": self.last_lat,
            "last_lon": self.last_lon,
            "last_time_ms": self.last_time_ms,
            "last_speed_kmh": self.last_speed_kmh,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeoState:
        return cls(
            home_lat=d.get("home_lat"),
            home_lon=d.get("home_lon"),
            home_source=d.get("home_source", "none"),
            centroid_lat=d.get("centroid_lat"),
            centroid_lon=d.get("centroid_lon"),
            centroid_n=int(d.get("centroid_n", 0)),
            last_lat=d.get("last_lat"),
            last_lon=d.get("last_lon"),
            last_time_ms=d.get("last_time_ms"),
            last_speed_kmh=float(d.get("last_speed_kmh", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class GeoObservation:
    distance_from_home_km: float | None
    distance_from_last_km: float | None
    minutes_since_last: float | None  # absolute gap to the last position, either direction
    speed_kmh: float | None
    billing_shipping_km: float | None  # card_not_present only


def observe(
    state: GeoState | None,
    *,
    time_ms: int,
    location: LatLon | None,
    billing: LatLon | None,
    shipping: LatLon | None,
    channel: str | None,
) -> GeoObservation:
    """What this transaction looks like against the account's state before it."""
    state = state or GeoState()
    from_home = from_last = minutes = speed = None
    if location is not None:
        if state.home_lat is not None and state.home_lon is not None:
            from_home = haversine_km(state.home_lat, state.home_lon, *location)
        if state.last_lat is not None and state.last_lon is not None:
            from_last = haversine_km(state.last_lat, state.last_lon, *location)
            # An out-of-order event is still a move between two real positions,
            # so the gap counts in either direction.
            elapsed_ms = abs(time_ms - (state.last_time_ms or 0))
            minutes = elapsed_ms / MINUTE_MS
            speed = from_last / (max(elapsed_ms, MIN_ELAPSED_MS) / HOUR_MS)
    billing_shipping = None
    # Online, a shipping address far from billing is a signal; in a shop it is noise.
    if channel == "card_not_present" and billing is not None and shipping is not None:
        billing_shipping = haversine_km(*billing, *shipping)
    return GeoObservation(
        distance_from_home_km=from_home,
        distance_from_last_km=from_last,
        minutes_since_last=minutes,
        speed_kmh=speed,
        billing_shipping_km=billing_shipping,
    )


def apply_transaction(
    state: GeoState | None,
    *,
    time_ms: int,
    location: LatLon | None,
    billing: LatLon | None,
    shipping: LatLon | None,
    channel: str | None,
) -> GeoState:
    """The state after one more transaction; the input is never mutated."""
    before = state or GeoState()
    s = replace(before)

    # A location is physical unless the transaction is online, where it is at
    # best a guess from the network, so only those are kept out of the centroid.
    if location is not None and channel != "card_not_present":
        lat, lon = location
        s.centroid_n += 1
        if s.centroid_lat is None or s.centroid_lon is None:
            s.centroid_lat, s.centroid_lon = lat, lon
        else:
            # A plain mean of degrees: fine for an account that lives in one
            # region, wrong for one straddling the antimeridian (+179 and -179
            # average to 0). A mean of unit vectors would fix that if it matters.
            s.centroid_lat += (lat - s.centroid_lat) / s.centroid_n
            s.centroid_lon += (lon - s.centroid_lon) / s.centroid_n

    if billing is not None:
        s.home_lat, s.home_lon = billing
        s.home_source = "billing"
    elif s.home_source != "billing" and s.centroid_lat is not None:
        s.home_lat, s.home_lon = s.centroid_lat, s.centroid_lon
        s.home_source = "centroid"

    # An older event must not move the card back in time; it only informs home.
    if location is not None and (before.last_time_ms is None or time_ms >= before.last_time_ms):
        obs = observe(
            before, time_ms=time_ms, location=location, billing=None, shipping=None, channel=None
        )
        s.last_lat, s.last_lon = location
        s.last_time_ms = time_ms
        s.last_speed_kmh = obs.speed_kmh or 0.0
    return s


def geo_view(state: GeoState, account_id: str) -> dict[str, Any]:
    """The body of ``GET /accounts/{account_id}/geo``."""
    home = None
    if state.home_lat is not None and state.home_lon is not None:
        home = {"lat": state.home_lat, "lon": state.home_lon}
    last = None
    if state.last_lat is not None and state.last_lon is not None and state.last_time_ms is not None:
        last = {
            "lat": state.last_lat,
            "lon": state.last_lon,
            "time": ms_to_rfc3339(state.last_time_ms),
        }
    return {
        "account_id": account_id,
        "home": home,
        "home_source": state.home_source,
        "last": last,
        "last_speed_kmh": round(state.last_speed_kmh, 2),
    }
