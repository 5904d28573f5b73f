from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import orjson
import pytest

from agents.contracts import Transaction, rfc3339_to_ms
from agents.demo import MALFORMED_TAGS, PATTERNS, DemoConfig, generate, generate_messages
from agents.validation import Rejected, fingerprint, parse_transaction

DEAD_LETTER_REASONS = {
    "invalid_json",
    "not_an_object",
    "missing_schema_version",
    "unknown_schema_version",
    "invalid_field",
    "conflicting_duplicate",
}


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    return list(generate(DemoConfig()))


@pytest.fixture(scope="module")
def messages() -> list[tuple[bytes | None, bytes, str | None]]:
    return list(generate_messages(DemoConfig(transactions=600, malformed_every=7)))


def seconds(tx: dict) -> float:
    return rfc3339_to_ms(tx["timestamp"]) / 1000


def km_between(a: dict, b: dict) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a["lat"], a["lon"], b["lat"], b["lon"]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def by_account(transactions: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for tx in transactions:
        grouped[tx["account_id"]].append(tx)
    return grouped


def test_the_same_seed_gives_byte_identical_messages():
    config = DemoConfig(transactions=800, malformed_every=5)

    assert list(generate_messages(config)) == list(generate_messages(config))


def test_a_different_seed_gives_different_traffic():
    first = list(generate(DemoConfig(seed=1, transactions=300)))
    second = list(generate(DemoConfig(seed=2, transactions=300)))

    assert first != second


def test_the_configured_number_of_transactions_is_generated(demo):
    assert len(demo) == DemoConfig().transactions
    assert len(list(generate(DemoConfig(transactions=37)))) == 37
    assert list(generate(DemoConfig(transactions=0))) == []


def test_every_generated_transaction_is_a_valid_contract_transaction(demo):
    for tx in demo:
        Transaction.model_validate(tx)


def test_timestamps_are_rfc3339_in_utc(demo):
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tx["timestamp"]) for tx in demo)
    assert seconds(demo[0]) >= rfc3339_to_ms(DemoConfig().start) / 1000


def test_event_times_never_go_backwards(demo):
    times = [seconds(tx) for tx in demo]

    assert times == sorted(times)


def test_transaction_ids_are_unique_and_numbered_in_stream_order(demo):
    ids = [tx["transaction_id"] for tx in demo]

    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["tx-000001", "tx-000002", "tx-000003"]


def test_account_and_merchant_ids_follow_the_naming_scheme(demo):
    assert all(re.fullmatch(r"acct-\d{4}", tx["account_id"]) for tx in demo)
    assert all(re.fullmatch(r"m-\d{4}", tx["merchant_id"]) for tx in demo)
    assert len({tx["account_id"] for tx in demo}) > 150
    assert len({tx["merchant_id"] for tx in demo}) > 60


def test_the_mean_gap_between_transactions_is_about_the_configured_one(demo):
    mean_gap_s = (seconds(demo[-1]) - seconds(demo[0])) / (len(demo) - 1)

    assert 15 < mean_gap_s < 25


def test_every_fraud_pattern_appears_and_only_fraud_is_labelled(demo):
    patterns = Counter(tx.get("demo_pattern") for tx in demo)

    assert set(patterns) == {None, *PATTERNS}
    assert 0.01 < 1 - patterns[None] / len(demo) < 0.06


def test_everyday_traffic_is_mostly_in_person_and_ships_online_orders_to_billing(demo):
    everyday = [tx for tx in demo if "demo_pattern" not in tx]
    channels = Counter(tx["channel"] for tx in everyday)
    online = [tx for tx in everyday if tx["channel"] == "card_not_present"]

    assert channels["card_present"] > 2 * channels["card_not_present"] > 0
    assert all(tx["shipping_location"] == tx["billing_location"] for tx in online)
    assert all("location" in tx for tx in everyday if tx["channel"] == "card_present")


def test_everyday_in_person_purchases_are_near_home(demo):
    in_person = [tx for tx in demo if "demo_pattern" not in tx and tx["channel"] == "card_present"]

    assert max(km_between(tx["location"], tx["billing_location"]) for tx in in_person) < 50


def test_a_burst_is_six_to_ten_transactions_of_one_account_within_minutes(demo):
    bursts = by_account([tx for tx in demo if tx.get("demo_pattern") == "burst"])

    assert bursts
    for burst in bursts.values():
        assert 6 <= len(burst) <= 10
        assert seconds(burst[-1]) - seconds(burst[0]) <= 7 * 60


def test_impossible_travel_is_thousands_of_km_from_the_last_purchase_within_half_an_hour(demo):
    journeys = []
    for transactions in by_account(demo).values():
        last_in_person = None
        for tx in transactions:
            if tx.get("demo_pattern") == "impossible_travel":
                journeys.append((last_in_person, tx))
            if tx["channel"] == "card_present":
                last_in_person = tx

    assert journeys
    for before, away in journeys:
        assert away["channel"] == "card_present"
        assert km_between(before["location"], away["location"]) >= 3000
        # An everyday purchase at home may fall between the two, closer still.
        assert seconds(away) - seconds(before) <= 30 * 60


def test_an_amount_spike_comes_from_an_established_account_at_ten_times_its_usual_amount(demo):
    spikes = 0
    for transactions in by_account(demo).values():
        for index, tx in enumerate(transactions):
            if tx.get("demo_pattern") == "amount_spike":
                spikes += 1
                earlier = sorted(t["amount"] for t in transactions[:index])
                assert len(earlier) >= 10
                assert tx["amount"] >= 5 * earlier[len(earlier) // 2]

    assert spikes


def test_a_compromised_merchant_sees_25_accounts_in_an_hour_shipping_far_from_billing(demo):
    episodes: dict[str, list[dict]] = defaultdict(list)
    for tx in demo:
        if tx.get("demo_pattern") == "compromised_merchant":
            episodes[tx["merchant_id"]].append(tx)

    assert episodes
    for episode in episodes.values():
        first_hour = [tx for tx in episode if seconds(tx) - seconds(episode[0]) < 3600]
        assert len({tx["account_id"] for tx in first_hour}) >= 25
        for tx in episode:
            assert tx["channel"] == "card_not_present"
            assert km_between(tx["billing_location"], tx["shipping_location"]) >= 3000


def test_without_malformed_every_the_messages_are_the_transactions_keyed_by_account():
    config = DemoConfig(transactions=200)

    expected = [(tx["account_id"].encode(), orjson.dumps(tx), None) for tx in generate(config)]

    assert list(generate_messages(config)) == expected


def test_one_extra_message_follows_every_nth_transaction(messages):
    tags = [tag for _, _, tag in messages]

    assert len(messages) == 600 + 600 // 7
    assert all(tag is not None for tag in tags[7::8])


def test_malformed_messages_cover_every_dead_letter_reason(messages):
    assert {tag for _, _, tag in messages} == {None, *MALFORMED_TAGS}
    assert DEAD_LETTER_REASONS | {"duplicate"} == set(MALFORMED_TAGS)


def test_each_message_gets_the_outcome_its_tag_names(messages):
    seen: dict[str, str] = {}  # transaction_id -> fingerprint
    for _, value, tag in messages:
        parsed = parse_transaction(value)
        if tag in DEAD_LETTER_REASONS - {"conflicting_duplicate"}:
            assert isinstance(parsed, Rejected) and parsed.reason == tag, (tag, value)
            continue
        assert isinstance(parsed, Transaction), (tag, value)
        previous = seen.get(parsed.transaction_id)
        if tag is None:
            assert previous is None
            seen[parsed.transaction_id] = fingerprint(parsed)
        elif tag == "duplicate":
            assert previous == fingerprint(parsed)
        else:
            assert previous is not None and previous != fingerprint(parsed)


def test_one_invalid_json_message_is_not_utf8(messages):
    def is_utf8(value: bytes) -> bool:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    invalid_json = [value for _, value, tag in messages if tag == "invalid_json"]

    assert any(not is_utf8(value) for value in invalid_json)
    assert any(is_utf8(value) for value in invalid_json)


def test_messages_with_a_transaction_body_are_keyed_by_its_account(messages):
    for key, value, tag in messages:
        if tag in (None, "duplicate", "conflicting_duplicate", "unknown_schema_version"):
            assert key == orjson.loads(value)["account_id"].encode()


def test_small_worlds_still_generate_valid_traffic():
    config = DemoConfig(accounts=1, merchants=1, transactions=40, fraud_rate=0.5)

    for tx in generate(config):
        Transaction.model_validate(tx)


@pytest.mark.parametrize(
    "change",
    [
        {"accounts": 0},
        {"merchants": 0},
        {"transactions": -1},
        {"mean_gap_s": 0},
        {"fraud_rate": 1.5},
        {"malformed_every": -1},
        {"start": "yesterday"},
    ],
)
def test_a_nonsensical_config_is_rejected(change):
    with pytest.raises(ValueError):
        DemoConfig(**change)
