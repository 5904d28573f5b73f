"""The pure figures of `riskstream bench`: percentiles, pacing, matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.benchstats import (
    cpu_seconds,
    due_count,
    due_time,
    latency_summary,
    match_times,
    percentile,
    ratio,
    throughput,
)

values = st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200)


def test_percentile_interpolates_between_ranks():
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 50) == 30.0
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([10.0, 20.0, 30.0], 0) == 10.0
    assert percentile([10.0, 20.0, 30.0], 100) == 30.0


@given(values)
def test_percentiles_are_ordered_and_within_the_values(xs):
    s = latency_summary(xs)
    assert min(xs) <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"] == max(xs)


def test_summary_of_nothing_is_empty_not_zero():
    assert latency_summary([]) == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_percentile_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_pacing_spreads_messages_over_time_and_zero_means_all_at_once():
    assert [due_time(10.0, i, 4.0) for i in range(3)] == [10.0, 10.25, 10.5]
    assert due_time(10.0, 99, 0.0) == 10.0
    assert due_count(10.0, 9.0, 4.0, 100) == 0
    assert due_count(10.0, 10.0, 4.0, 100) == 1
    assert due_count(10.0, 11.0, 4.0, 100) == 5
    assert due_count(10.0, 1e9, 4.0, 100) == 100
    assert due_count(10.0, 10.0, 0.0, 100) == 100


@given(st.floats(0.1, 1e5), st.floats(0, 100), st.integers(1, 10_000))
def test_the_message_due_at_a_time_is_counted_by_then(rate, elapsed, total):
    n = due_count(0.0, elapsed, rate, total)
    assert 0 <= n <= total
    if n < total:
        assert due_time(0.0, n, rate) > elapsed - 1e-9


def test_matching_pairs_ids_and_counts_the_unmatched():
    m = match_times({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.5, "c": 3.01, "x": 9.0})
    assert m.matched == 2 and m.unmatched == 1
    assert m.latencies_ms == pytest.approx([500.0, 10.0])
    assert (m.first_produce_s, m.last_consume_s) == (1.0, 3.01)
    assert throughput(m.matched, m.first_produce_s, m.last_consume_s) == pytest.approx(2 / 2.01)


def test_throughput_cpu_and_ratio_edge_cases():
    assert throughput(0, 1.0, 2.0) == 0.0
    assert throughput(5, None, 2.0) == 0.0
    assert throughput(5, 2.0, 2.0) == 0.0
    assert cpu_seconds({"a": 1.0, "b": 2.0}, {"a": 3.5, "c": 1.0}) == {"a": 2.5}
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(10.0, 0.0) is None
    assert ratio(None, 4.0) is None


def test_hop_latencies_pair_each_transactions_timestamps_topic_to_topic():
    from agents.benchstats import hop_latencies

    stamps = {
        "in": {"a": 100.0, "b": 200.0, "c": 300.0},
        "mid": {"a": 110.0, "b": 230.0},  # c never got here
        "out": {"a": 111.0, "b": 260.0, "c": 999.0},
    }
    hops = [("first", "in", "mid"), ("second", "mid", "out"), ("whole", "in", "out")]
    got = hop_latencies(stamps, hops, ["a", "b", "c"])
    assert got["first"]["count"] == 2 and got["first"]["max"] == 30.0
    assert got["second"]["count"] == 2 and got["second"]["p50"] == 15.5  # 1 and 30, interpolated
    assert got["whole"]["count"] == 3 and got["whole"]["max"] == 699.0
    assert hop_latencies(stamps, hops, ["b"])["first"]["p50"] == 30.0  # only the ids asked for


def test_a_decision_naming_an_agent_that_answered_by_the_deadline_is_counted():
    from agents.benchstats import named_missing_in_time

    answered = {"geo": {"a": 1_999.0, "b": 2_000.0}, "velocity": {"c": 500.0}}
    named = {
        "a": (["geo"], 0.0),  # answered 1 ms before its deadline: in time
        "b": (["geo"], 0.0),  # answered at the deadline: late
        "c": (["profile", "velocity"], 0.0),  # velocity had answered in time
        "d": (["geo"], 0.0),  # geo never answered
    }
    assert named_missing_in_time(named, answered, deadline_ms=2_000) == 2
    assert named_missing_in_time({"a": (["geo"], 0.0)}, answered, deadline_ms=1_999) == 0
    assert named_missing_in_time({}, answered, deadline_ms=2_000) == 0
