"""Pure scoring with stable reason codes: agents.scoring."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.scoring import (
    REASON_CODES,
    REASON_WEIGHTS,
    GeoRules,
    ProfileRules,
    VelocityRules,
    score_geo,
    score_profile,
    score_velocity,
)
from tables import profile_state
from tables.geo_state import GeoObservation
from tables.merchant_windows import MerchantWindow
from tables.windows import AccountWindow

T0 = int(datetime(2025, 1, 1, 14, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
HOUR = 3_600_000
DECLINE, REVIEW = 0.8, 0.5


def codes(scored) -> list[str]:
    return [r.code for r in scored.reasons]


# --- velocity ----------------------------------------------------------------


def velocity_of(events, *, merchant_accounts=()):
    """events: (minutes_before_T0, amount, merchant_id); scored as of T0."""
    state = AccountWindow(T0 - events[0][0] * MIN)
    for i, (minutes, amount, merchant) in enumerate(events):
        state.add(
            time_ms=T0 - minutes * MIN,
            transaction_id=f"t{i}",
            amount=amount,
            merchant_id=merchant,
            max_events=1000,
            allowed_lateness_ms=HOUR,
        )
    mstate = MerchantWindow(T0) if merchant_accounts else None
    for i, account in enumerate(merchant_accounts):
        mstate.add(
            time_ms=T0 - i,
            transaction_id=f"m{i}",
            account_id=account,
            max_events=1000,
            allowed_lateness_ms=HOUR,
        )
    mwindows = mstate.windows(T0) if mstate else None
    return score_velocity(state.windows(T0), mwindows, VelocityRules())


def test_a_quiet_account_scores_zero_with_no_reasons():
    scored = velocity_of([(300, 20.0, "m1"), (0, 25.0, "m1")], merchant_accounts=["a", "b"])
    assert scored.score == 0.0
    assert scored.reasons == []
    assert scored.features["count_1h"] == 1
    assert scored.features["count_24h"] == 2
    assert scored.features["merchant_accounts_1h"] == 2


def test_a_burst_in_10_minutes_alone_reaches_decline():
    scored = velocity_of([(m, 5.0, "m1") for m in (9, 8, 6, 5, 3, 2, 0)])
    assert codes(scored) == ["VELOCITY_BURST_10M"]
    assert scored.reasons[0].detail == "7 transactions in 10 min"
    assert scored.score >= DECLINE
    assert scored.features["count_10m"] == 7


def test_a_burst_in_one_minute_fires_both_burst_reasons():
    scored = velocity_of([(0, 5.0, "m1")] * 5)
    assert set(codes(scored)) == {"VELOCITY_BURST_1M", "VELOCITY_BURST_10M"}
    assert scored.score > 0.95


def test_spending_over_the_hourly_limit_fires_amount_1h():
    scored = velocity_of([(50, 2000.0, "m1"), (0, 1500.0, "m1")])
    assert codes(scored) == ["VELOCITY_AMOUNT_1H"]
    assert scored.reasons[0].detail == "3500.00 spent in 1 h over 2 transactions"
    assert REVIEW <= scored.score < DECLINE


def test_many_distinct_merchants_in_an_hour_fire():
    scored = velocity_of([(50 - 10 * i, 5.0, f"m{i}") for i in range(5)])
    assert codes(scored) == ["VELOCITY_MANY_MERCHANTS_1H"]
    assert scored.reasons[0].detail == "5 distinct merchants in 1 h"


def test_a_merchant_seeing_many_accounts_fires_and_missing_merchant_windows_are_fine():
    scored = velocity_of([(0, 5.0, "m1")], merchant_accounts=[f"a{i}" for i in range(20)])
    assert codes(scored) == ["VELOCITY_MERCHANT_MANY_ACCOUNTS_1H"]
    assert scored.features["merchant_accounts_1h"] == 20
    without = velocity_of([(0, 5.0, "m1")])
    assert without.features["merchant_accounts_1h"] is None
    assert without.score == 0.0


# --- profile -----------------------------------------------------------------


def profile_of(amounts, *, merchant="m1", channel="card_present", hour=14):
    profile = None
    for i, amount in enumerate(amounts):
        profile = profile_state.apply_transaction(
            profile,
            time_ms=T0 - (i + 1) * 24 * HOUR + (hour - 14) * HOUR,
            amount=amount,
            merchant_id=merchant,
            channel=channel,
            merchant_category="5411",
        )
    return profile


def profile_score(
    before, amount=50.0, *, merchant="m1", channel="card_present", time_ms=T0, rules=None
):
    return score_profile(
        before,
        amount=amount,
        merchant_id=merchant,
        channel=channel,
        merchant_category="5411",
        time_ms=time_ms,
        rules=rules or ProfileRules(),
    )


def test_a_new_account_is_not_flagged_for_everything():
    for before in (None, profile_of([50.0] * 4)):
        scored = profile_score(
            before, 100_000.0, merchant="new", channel="card_not_present", time_ms=T0 + 12 * HOUR
        )
        assert scored.reasons == []
        assert scored.score == 0.0


def test_profile_reasons_start_once_the_warm_up_count_is_reached():
    before = profile_of([50.0] * 5)
    scored = profile_score(before, 5_000.0)
    assert codes(scored) == ["PROFILE_AMOUNT_SPIKE", "PROFILE_AMOUNT_ZSCORE"]
    assert scored.features["profile_count"] == 5
    assert scored.score >= DECLINE


def test_a_usual_transaction_scores_zero():
    before = profile_of([40.0, 60.0] * 15)
    scored = profile_score(before, 55.0)
    assert scored.reasons == []
    assert scored.features["amount_zscore"] == pytest.approx(0.5)
    assert scored.features["hour_share"] == 1.0


def test_an_amount_spike_alone_reaches_decline():
    # A wide spread keeps the z-score under 3 while the amount is 6x the mean.
    before = profile_of([10.0, 10.0, 10.0, 10.0, 460.0])
    scored = profile_score(before, 600.0)
    assert codes(scored) == ["PROFILE_AMOUNT_SPIKE"]
    assert scored.reasons[0].detail == "amount 600.00 is 6.0x the mean 100.00"
    assert scored.score >= DECLINE


def test_an_amount_many_std_above_the_mean_fires_the_zscore():
    before = profile_of([40.0, 60.0] * 5)  # mean 50, std 10
    scored = profile_score(before, 95.0)
    assert codes(scored) == ["PROFILE_AMOUNT_ZSCORE"]
    assert scored.reasons[0].detail == "amount 95.00 is 4.5 std above the mean 50.00"
    assert REVIEW <= scored.score < DECLINE


def test_a_constant_spender_is_not_flagged_for_cents():
    before = profile_of([10.0] * 10)
    assert profile_score(before, 10.5).reasons == []


def test_a_new_merchant_alone_is_weak():
    scored = profile_score(profile_of([50.0] * 10), merchant="elsewhere")
    assert codes(scored) == ["PROFILE_NEW_MERCHANT"]
    assert scored.reasons[0].detail == "first transaction at merchant elsewhere after 10"
    assert 0.1 <= scored.score <= 0.2


def test_a_new_channel_fires_only_when_the_account_has_a_channel_habit():
    scored = profile_score(profile_of([50.0] * 10), channel="card_not_present")
    assert codes(scored) == ["PROFILE_NEW_CHANNEL"]
    assert scored.reasons[0].detail == "first card_not_present transaction after 10"
    unknown = profile_score(profile_of([50.0] * 10, channel=None), channel="card_not_present")
    assert unknown.reasons == []


def test_an_unusual_hour_fires_once_there_is_enough_history():
    at_3am = T0 - 11 * HOUR
    scored = profile_score(profile_of([50.0] * 20), time_ms=at_3am)
    assert codes(scored) == ["PROFILE_UNUSUAL_HOUR"]
    assert scored.reasons[0].detail == "03:00 UTC held 0% of 20 past transactions"
    assert 0.15 <= scored.score <= 0.25
    assert profile_score(profile_of([50.0] * 19), time_ms=at_3am).reasons == []


# --- geo -----------------------------------------------------------------------


def obs(**kwargs) -> GeoObservation:
    base = dict.fromkeys(GeoObservation.__slots__)
    return GeoObservation(**(base | kwargs))


def test_impossible_travel_alone_reaches_decline():
    scored = score_geo(
        obs(distance_from_last_km=2140.0, minutes_since_last=12.0, speed_kmh=10_700.0), GeoRules()
    )
    assert codes(scored) == ["GEO_IMPOSSIBLE_TRAVEL"]
    assert scored.reasons[0].detail == "2140 km in 12 min (10700 km/h)"
    assert scored.score >= DECLINE
    assert scored.features["speed_kmh"] == 10_700.0


def test_a_short_hop_is_location_noise_not_impossible_travel():
    scored = score_geo(
        obs(distance_from_last_km=20.0, minutes_since_last=0.5, speed_kmh=1200.0), GeoRules()
    )
    assert scored.reasons == []


def test_a_plausible_flight_is_not_impossible_travel():
    scored = score_geo(
        obs(distance_from_last_km=5800.0, minutes_since_last=480.0, speed_kmh=725.0), GeoRules()
    )
    assert scored.reasons == []


def test_far_from_home_and_billing_shipping_mismatch_fire_with_middling_weight():
    far = score_geo(obs(distance_from_home_km=812.4), GeoRules())
    assert codes(far) == ["GEO_FAR_FROM_HOME"]
    assert far.reasons[0].detail == "812 km from home"
    mismatch = score_geo(obs(billing_shipping_km=9400.0), GeoRules())
    assert codes(mismatch) == ["GEO_BILLING_SHIPPING_MISMATCH"]
    assert far.score < mismatch.score < REVIEW
    both = score_geo(obs(distance_from_home_km=812.4, billing_shipping_km=9400.0), GeoRules())
    assert both.score == round(1 - (1 - far.score) * (1 - mismatch.score), 4)
    assert REVIEW <= both.score < DECLINE


def test_no_geo_data_scores_zero():
    scored = score_geo(obs(), GeoRules())
    assert scored.score == 0.0
    assert scored.features == {
        "distance_from_home_km": None,
        "distance_from_last_km": None,
        "minutes_since_last": None,
        "speed_kmh": None,
        "billing_shipping_km": None,
    }


# --- the code table ------------------------------------------------------------


def test_every_reason_code_has_a_description_and_a_weight():
    assert REASON_CODES.keys() == REASON_WEIGHTS.keys()
    assert len(REASON_CODES) == 13
    for code, description in REASON_CODES.items():
        assert code == code.upper()
        assert code.split("_")[0] in {"VELOCITY", "PROFILE", "GEO"}
        assert description and "\n" not in description
        assert 0.0 < REASON_WEIGHTS[code] < 1.0


def test_strong_reasons_alone_decline_and_weak_ones_stay_below_review():
    for code in (
        "VELOCITY_BURST_1M",
        "VELOCITY_BURST_10M",
        "GEO_IMPOSSIBLE_TRAVEL",
        "PROFILE_AMOUNT_SPIKE",
    ):
        assert REASON_WEIGHTS[code] >= DECLINE
    for code in (
        "PROFILE_NEW_MERCHANT",
        "PROFILE_UNUSUAL_HOUR",
        "PROFILE_NEW_CHANNEL",
        "GEO_FAR_FROM_HOME",
    ):
        assert REASON_WEIGHTS[code] < REVIEW


@given(
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_the_score_stays_in_range_and_grows_with_every_extra_reason(fewer, extra):
    # Feeding score_geo is the simplest way to switch reasons on and off; the
    # combination rule is shared by all three agents.
    more = [a or b for a, b in zip(fewer, extra, strict=True)]

    def geo(flags):
        travel, home, billing = flags[0], flags[1], flags[2]
        return score_geo(
            obs(
                distance_from_last_km=3000.0 if travel else None,
                minutes_since_last=10.0 if travel else None,
                speed_kmh=18_000.0 if travel else None,
                distance_from_home_km=3000.0 if home else None,
                billing_shipping_km=3000.0 if billing else None,
            ),
            GeoRules(),
        ).score

    low, high = geo(fewer), geo(more)
    assert 0.0 <= low <= high <= 1.0


def test_features_are_flat_numbers():
    scored = [
        velocity_of([(0, 5.0, "m1")], merchant_accounts=["a"]),
        profile_score(profile_of([50.0] * 10)),
        score_geo(obs(distance_from_home_km=1.0), GeoRules()),
    ]
    for value in itertools.chain.from_iterable(s.features.values() for s in scored):
        assert value is None or type(value) in (int, float)
