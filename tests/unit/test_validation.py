"""Raw bytes from `transactions` become a Transaction or a dead letter with the right reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.contracts import (
    SourcePosition,
    Transaction,
    analysis_id_for,
    ms_to_rfc3339,
    rfc3339_to_ms,
)
from agents.validation import Rejected, dead_letter, fingerprint, parse_transaction

VALID = {
    "schema_version": 1,
    "transaction_id": "tx-000001",
    "account_id": "acct-42",
    "amount": 57.49,
    "currency": "USD",
    "timestamp": "2025-01-01T00:00:13Z",
    "merchant_id": "term-462",
    "channel": "card_present",
    "location": {"lat": -23.427, "lon": -46.455},
    "billing_location": {"lat": -4.779, "lon": -42.571},
    "shipping_location": {"lat": -4.779, "lon": -42.571},
    "merchant_category": "5411",
}


def parse(obj: object) -> Transaction | Rejected:
    return parse_transaction(orjson.dumps(obj))


def reason_of(obj: object) -> str:
    result = parse(obj)
    assert isinstance(result, Rejected), f"expected a rejection, got {result!r}"
    return result.reason


def test_the_contract_example_is_a_valid_transaction():
    tx = parse(VALID)
    assert isinstance(tx, Transaction)
    assert tx.amount == 57.49 and tx.location.lat == -23.427
    assert tx.event_time_ms == 1735689613000


def test_only_required_fields_are_enough():
    required = {
        k: VALID[k]
        for k in (
            "schema_version",
            "transaction_id",
            "account_id",
            "amount",
            "currency",
            "timestamp",
            "merchant_id",
        )
    }
    assert isinstance(parse(required), Transaction)


def test_unknown_extra_fields_are_kept_and_ignored():
    tx = parse({**VALID, "device": {"id": "d-1"}})
    assert isinstance(tx, Transaction)
    assert tx.json_dict["device"] == {"id": "d-1"}


def test_epoch_seconds_and_offsets_normalise_to_the_same_utc_time():
    a = parse({**VALID, "timestamp": 1735689613})
    b = parse({**VALID, "timestamp": "2025-01-01T02:00:13+02:00"})
    c = parse({**VALID, "timestamp": 1735689613.5})
    assert a.timestamp == b.timestamp == "2025-01-01T00:00:13Z"
    assert c.timestamp == "2025-01-01T00:00:13.500Z"


def test_a_time_far_from_now_keeps_its_millisecond():
    # Through a float of epoch seconds, .123 in 2500 came out as .122.
    assert parse({**VALID, "timestamp": "2500-06-01T00:00:00.123Z"}).timestamp == (
        "2500-06-01T00:00:00.123Z"
    )
    # In epoch seconds: .321 came out as .320.
    epoch = parse({**VALID, "timestamp": 32503600000.321})
    assert epoch.timestamp == "2999-12-31T01:46:40.321Z"


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_every_millisecond_of_years_1_to_9999_is_written_and_read_back_exactly(ms: int):
    text = ms_to_rfc3339(ms)
    assert rfc3339_to_ms(text) == ms
    # Whole seconds stay short; otherwise three digits of milliseconds.
    assert text.endswith(f".{ms % 1000:03d}Z") if ms % 1000 else text[-4] != "."


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # 1970 to 2100
def test_the_text_of_a_time_is_what_datetime_writes_where_its_float_is_exact(ms: int):
    via_datetime = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    expected = via_datetime.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    assert ms_to_rfc3339(ms) == expected.replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_bytes_that_are_not_a_json_object_are_rejected(raw: bytes, reason: str):
    result = parse_transaction(raw)
    assert isinstance(result, Rejected) and result.reason == reason


def test_a_message_without_a_value_is_invalid_json():
    assert parse_transaction(None).reason == "invalid_json"


def test_schema_version_missing_or_unknown_is_named():
    missing = {k: v for k, v in VALID.items() if k != "schema_version"}
    assert reason_of(missing) == "missing_schema_version"
    result = parse({**VALID, "schema_version": 7})
    assert result.reason == "unknown_schema_version"
    assert result.error == "schema_version 7 is not supported (supported: 1)"
    assert reason_of({**VALID, "schema_version": "1"}) == "unknown_schema_version"
    assert reason_of({**VALID, "schema_version": True}) == "unknown_schema_version"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", -1),
        ("amount", 0),
        ("amount", 1e9 + 1),
        ("amount", "57.49"),
        ("amount", True),
        ("currency", "usd"),
        ("currency", "USDT"),
        ("transaction_id", ""),
        ("transaction_id", "x" * 129),
        ("account_id", 42),
        ("merchant_id", None),
        ("timestamp", "2025-01-01T00:00:13"),
        ("timestamp", "yesterday"),
        ("timestamp", -5),
        ("channel", "phone"),
        ("location", {"lat": 91, "lon": 0}),
        ("location", {"lat": 0, "lon": -181}),
        ("billing_location", {"lat": "x", "lon": 0}),
        ("merchant_category", "541"),
        ("merchant_category", 5411),
    ],
)
def test_a_field_that_breaks_the_rules_is_invalid_field(field: str, value: object):
    result = parse({**VALID, field: value})
    assert isinstance(result, Rejected), f"{field}={value!r} was accepted"
    assert result.reason == "invalid_field"
    assert field in result.error


def test_a_missing_required_field_is_invalid_field():
    for field in ("transaction_id", "account_id", "amount", "currency", "timestamp", "merchant_id"):
        body = {k: v for k, v in VALID.items() if k != field}
        result = parse(body)
        assert result.reason == "invalid_field" and field in result.error


def test_non_finite_amounts_are_rejected():
    raw = orjson.dumps(VALID).replace(b"57.49", b"1e999")
    assert parse_transaction(raw).reason in ("invalid_json", "invalid_field")


def test_the_same_body_has_the_same_fingerprint_and_another_body_does_not():
    a, b = parse(VALID), parse(dict(reversed(list(VALID.items()))))
    c = parse({**VALID, "amount": 57.5})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


def test_analysis_id_is_a_stable_uuid5_of_the_transaction_id():
    assert analysis_id_for("tx-000001") == analysis_id_for("tx-000001")
    assert analysis_id_for("tx-000001") != analysis_id_for("tx-000002")
    assert analysis_id_for("tx-000001")[14] == "5"  # the UUID version digit


def test_a_dead_letter_carries_the_source_and_the_payload():
    source = SourcePosition(topic="transactions", partition=2, offset=17)
    letter = dead_letter(Rejected("invalid_json", "bad"), b"{oops", source, "2026-01-01T00:00:00Z")
    assert letter.payload == "{oops" and letter.payload_encoding == "utf-8"
    assert letter.source.offset == 17
    binary = dead_letter(
        Rejected("invalid_json", "bad"), b"\xff\x00", source, "2026-01-01T00:00:00Z"
    )
    assert binary.payload_encoding == "base64"
    assert base64.b64decode(binary.payload) == b"\xff\x00"
