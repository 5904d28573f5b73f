"""Each account's geography: tables.geo_state."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime

import orjson
import pytest

from tables.geo_state import GeoState, apply_transaction, geo_view, haversine_km, observe

T0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)
SAO_PAULO = (-23.5505, -46.6333)


def move(state, time_ms, location=None, *, billing=None, shipping=None, channel="card_present"):
    return apply_transaction(
        state,
        time_ms=time_ms,
        location=location,
        billing=billing,
        shipping=shipping,
        channel=channel,
    )


def look(state, time_ms, location=None, *, billing=None, shipping=None, channel="card_present"):
    return observe(
        state,
        time_ms=time_ms,
        location=location,
        billing=billing,
        shipping=shipping,
        channel=channel,
    )


def test_haversine_gives_known_great_circle_distances():
    assert haversine_km(*PARIS, *PARIS) == 0.0
    assert haversine_km(*PARIS, *LONDON) == pytest.approx(343.5, abs=1.0)
    assert haversine_km(*PARIS, *NEW_YORK) == pytest.approx(5837, abs=5)
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(
        111.2, abs=0.1
    )  # across the antimeridian


def test_a_first_transaction_has_nothing_to_compare_with():
    obs = look(None, T0, PARIS)
    assert obs.distance_from_home_km is None
    assert obs.distance_from_last_km is None
    assert obs.minutes_since_last is None
    assert obs.speed_kmh is None


def test_home_is_the_billing_location_when_the_transaction_carries_one():
    state = move(None, T0, PARIS, billing=LONDON)
    assert (state.home_lat, state.home_lon, state.home_source) == (*LONDON, "billing")
    # A later transaction without billing keeps the billing home.
    state = move(state, T0 + MIN, NEW_YORK)
    assert (state.home_lat, state.home_lon, state.home_source) == (*LONDON, "billing")


def test_without_billing_home_is_the_centroid_of_card_present_locations():
    state = move(None, T0, (10.0, 20.0))
    state = move(state, T0 + 60 * MIN, (12.0, 22.0))
    assert state.home_source == "centroid"
    assert (state.home_lat, state.home_lon) == pytest.approx((11.0, 21.0))
    assert state.centroid_n == 2


def test_card_not_present_locations_do_not_move_the_centroid():
    state = move(None, T0, (10.0, 20.0))
    state = move(state, T0 + MIN, NEW_YORK, channel="card_not_present")
    assert (state.centroid_lat, state.centroid_lon, state.centroid_n) == (10.0, 20.0, 1)
    assert (state.last_lat, state.last_lon) == NEW_YORK


def test_an_account_with_no_locations_has_no_home():
    state = move(None, T0, None)
    assert (state.home_lat, state.home_source) == (None, "none")
    assert geo_view(state, "acct-1")["home"] is None


def test_observations_are_taken_against_the_state_before_the_transaction():
    state = move(None, T0, PARIS, billing=PARIS)
    obs = look(state, T0 + 60 * MIN, LONDON, billing=NEW_YORK)
    assert obs.distance_from_home_km == pytest.approx(haversine_km(*PARIS, *LONDON))
    assert obs.distance_from_last_km == pytest.approx(haversine_km(*PARIS, *LONDON))
    assert obs.minutes_since_last == 60.0
    assert obs.speed_kmh == pytest.approx(haversine_km(*PARIS, *LONDON))


def test_impossible_travel_shows_as_a_speed_far_above_an_airliner():
    state = move(None, T0, PARIS)
    obs = look(state, T0 + 12 * MIN, NEW_YORK)
    assert obs.speed_kmh == pytest.approx(5837 * 5, rel=0.01)


def test_speed_uses_at_least_one_minute_so_simultaneous_events_stay_finite():
    state = move(None, T0, PARIS)
    obs = look(state, T0 + 1_000, LONDON)
    assert obs.minutes_since_last == pytest.approx(1 / 60)
    assert obs.speed_kmh == pytest.approx(haversine_km(*PARIS, *LONDON) * 60)
    assert look(state, T0, PARIS).speed_kmh == 0.0


def test_applying_records_the_last_position_and_its_speed():
    state = move(None, T0, PARIS)
    assert state.last_speed_kmh == 0.0
    state = move(state, T0 + 120 * MIN, LONDON)
    assert (state.last_lat, state.last_lon, state.last_time_ms) == (*LONDON, T0 + 120 * MIN)
    assert state.last_speed_kmh == pytest.approx(haversine_km(*PARIS, *LONDON) / 2)


def test_an_out_of_order_event_does_not_move_last_back_but_informs_home():
    state = move(None, T0 + 60 * MIN, (10.0, 20.0))
    before_last = (state.last_lat, state.last_lon, state.last_time_ms, state.last_speed_kmh)
    state = move(state, T0, (12.0, 22.0))
    assert (state.last_lat, state.last_lon, state.last_time_ms, state.last_speed_kmh) == before_last
    assert (state.home_lat, state.home_lon) == pytest.approx((11.0, 21.0))


def test_an_out_of_order_event_is_still_compared_with_the_last_position():
    state = move(None, T0 + 10 * MIN, PARIS)
    obs = look(state, T0, NEW_YORK)
    assert obs.minutes_since_last == 10.0
    assert obs.speed_kmh > 900


def test_billing_to_shipping_distance_is_measured_only_for_card_not_present():
    online = look(None, T0, None, billing=PARIS, shipping=SAO_PAULO, channel="card_not_present")
    assert online.billing_shipping_km == pytest.approx(haversine_km(*PARIS, *SAO_PAULO))
    in_shop = look(None, T0, PARIS, billing=PARIS, shipping=SAO_PAULO, channel="card_present")
    assert in_shop.billing_shipping_km is None


def test_applying_never_mutates_the_input_state():
    state = move(None, T0, PARIS, billing=LONDON)
    snapshot = copy.deepcopy(state)
    move(state, T0 + MIN, NEW_YORK, billing=SAO_PAULO)
    assert state == snapshot


def test_geo_state_round_trips_through_orjson():
    state = move(move(None, T0, PARIS), T0 + 90 * MIN, LONDON, billing=NEW_YORK)
    restored = GeoState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert restored == state
    assert GeoState.from_dict(GeoState().to_dict()) == GeoState()


def test_geo_view_is_the_http_body():
    state = move(move(None, T0, PARIS), T0 + 120 * MIN, LONDON)
    assert geo_view(state, "acct-42") == {
        "account_id": "acct-42",
        "home": {"lat": pytest.approx(50.182), "lon": pytest.approx(1.1122)},
        "home_source": "centroid",
        "last": {"lat": LONDON[0], "lon": LONDON[1], "time": "2025-01-01T02:00:00Z"},
        "last_speed_kmh": round(haversine_km(*PARIS, *LONDON) / 2, 2),
    }
