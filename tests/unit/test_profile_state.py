"""Each account's spending profile: tables.profile_state."""

from __future__ import annotations

import copy
import math
import statistics
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.profile_state import Profile, apply_transaction, profile_view

T0 = int(datetime(2025, 1, 1, 0, 0, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000


def tx(
    profile,
    amount=10.0,
    *,
    time_ms=T0,
    merchant="m1",
    channel="card_present",
    category="5411",
    max_tracked=50,
):
    return apply_transaction(
        profile,
        time_ms=time_ms,
        amount=amount,
        merchant_id=merchant,
        channel=channel,
        merchant_category=category,
        max_tracked=max_tracked,
    )


def build(amounts, **kwargs) -> Profile:
    profile = None
    for amount in amounts:
        profile = tx(profile, amount, **kwargs)
    return profile


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0.01, 1e9, allow_nan=False), min_size=1, max_size=200))
def test_mean_and_std_match_the_statistics_module(amounts):
    profile = build(amounts)
    assert profile.count == len(amounts)
    assert math.isclose(profile.mean_amount, statistics.fmean(amounts), rel_tol=1e-9)
    expected_std = statistics.pstdev(amounts) if len(amounts) > 1 else 0.0
    scale = max(amounts)
    assert math.isclose(profile.std_amount, expected_std, rel_tol=1e-6, abs_tol=1e-9 * scale)
    assert profile.max_amount == max(amounts)


def test_std_is_zero_until_there_are_two_transactions():
    assert build([42.0]).std_amount == 0.0
    assert build([10.0, 30.0]).std_amount == 10.0


def test_first_and_last_seen_hold_even_when_events_arrive_out_of_order():
    profile = tx(None, time_ms=T0 + 5 * HOUR)
    profile = tx(profile, time_ms=T0 + 1 * HOUR)
    profile = tx(profile, time_ms=T0 + 3 * HOUR)
    assert (profile.first_seen_ms, profile.last_seen_ms) == (T0 + HOUR, T0 + 5 * HOUR)


def test_hours_count_the_utc_hour_of_the_event_time():
    profile = tx(None, time_ms=T0 + 3 * HOUR + 59 * 60_000)
    profile = tx(profile, time_ms=T0 + 27 * HOUR)  # 03:00 the next day
    profile = tx(profile, time_ms=T0 + 23 * HOUR)
    assert profile.hours[3] == 2
    assert profile.hours[23] == 1
    assert sum(profile.hours) == profile.count == 3


def test_channels_merchants_and_categories_are_counted_and_unknowns_skipped():
    profile = tx(None, merchant="m1", channel="card_present", category="5411")
    profile = tx(profile, merchant="m2", channel=None, category=None)
    profile = tx(profile, merchant="m1", channel="card_not_present", category="5411")
    assert profile.merchants == {"m1": 2, "m2": 1}
    assert profile.channels == {"card_present": 1, "card_not_present": 1}
    assert profile.categories == {"5411": 2}


def test_a_full_counter_evicts_the_rarest_entry_ties_by_name_before_adding():
    profile = None
    for merchant in ["b", "b", "a", "c"]:
        profile = tx(profile, merchant=merchant, max_tracked=3)
    assert profile.merchants == {"b": 2, "a": 1, "c": 1}
    profile = tx(profile, merchant="d", max_tracked=3)
    assert profile.merchants == {"b": 2, "c": 1, "d": 1}  # "a" and "c" tied; "a" goes
    assert len(profile.merchants) == 3


def test_applying_a_transaction_never_mutates_the_input_profile():
    profile = build([10.0, 20.0])
    snapshot = copy.deepcopy(profile)
    tx(
        profile,
        500.0,
        merchant="new",
        channel="card_not_present",
        category="7995",
        time_ms=T0 + 7 * HOUR,
    )
    assert profile == snapshot


def test_profile_round_trips_through_orjson():
    profile = tx(build([10.0, 20.5, 7.25]), 3.0, merchant="m9", channel=None, time_ms=T0 + 9 * HOUR)
    restored = Profile.from_dict(orjson.loads(orjson.dumps(profile.to_dict())))
    assert restored == profile
    assert tx(restored, 1.0) == tx(profile, 1.0)


def test_profile_view_is_the_http_body():
    profile = None
    for merchant, amount in [("m2", 10.0), ("m1", 20.0), ("m1", 30.0), ("m3", 40.0), ("m2", 50.0)]:
        profile = tx(profile, amount, merchant=merchant, time_ms=T0 + 30_500)
    for i in range(5):
        profile = tx(profile, 30.0, merchant=f"z{i}", channel="card_not_present", time_ms=T0 + HOUR)
    view = profile_view(profile, "acct-42")
    assert view == {
        "account_id": "acct-42",
        "count": 10,
        "mean_amount": 30.0,
        "std_amount": 10.0,
        "max_amount": 50.0,
        "first_seen": "2025-01-01T00:00:30.500Z",
        "last_seen": "2025-01-01T01:00:00Z",
        "channels": {"card_present": 5, "card_not_present": 5},
        "top_merchants": ["m1", "m2", "m3", "z0", "z1"],
        "top_categories": ["5411"],
        "hours": [5, 5] + [0] * 22,
    }
    orjson.dumps(view)
