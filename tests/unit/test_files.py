from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.demo import DemoConfig, generate
from agents.files import count_transactions, read_transactions, write_transactions

FORMATS = ["jsonl", "ndjson", "csv", "parquet"]
FLAT_FORMATS = ["csv", "parquet"]


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    return list(generate(DemoConfig(transactions=1500)))


def transaction(**fields) -> dict:
    tx = {
        "schema_version": 1,
        "transaction_id": "tx-1",
        "account_id": "acct-1",
        "amount": 57.49,
        "currency": "USD",
        "timestamp": "2025-01-01T00:00:13Z",
        "merchant_id": "m-0001",
    }
    tx.update(fields)
    return tx


@pytest.mark.parametrize("suffix", FORMATS)
def test_generated_transactions_survive_a_write_and_read_round_trip(tmp_path, demo, suffix):
    path = tmp_path / f"demo.{suffix}"

    written = write_transactions(path, iter(demo))

    assert written == len(demo)
    assert list(read_transactions(path)) == demo


@pytest.mark.parametrize("suffix", FORMATS)
def test_the_cheap_count_matches_the_rows_written(tmp_path, demo, suffix):
    path = tmp_path / f"demo.{suffix}"
    write_transactions(path, demo)

    assert count_transactions(path) == len(demo)


@pytest.mark.parametrize("suffix", FORMATS)
def test_writing_no_rows_gives_a_file_with_no_transactions(tmp_path, suffix):
    path = tmp_path / f"empty.{suffix}"

    assert write_transactions(path, []) == 0
    assert list(read_transactions(path)) == []
    assert count_transactions(path) == 0


def test_paths_may_be_strings_and_suffixes_any_case(tmp_path):
    path = str(tmp_path / "upper.CSV")
    write_transactions(path, [transaction()])

    assert list(read_transactions(path)) == [transaction()]


@pytest.mark.parametrize("name", ["demo.xlsx", "demo.json", "demo"])
def test_an_unsupported_suffix_raises_a_value_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("{}\n")

    with pytest.raises(ValueError, match=name):
        read_transactions(path)
    with pytest.raises(ValueError, match="unsupported suffix"):
        write_transactions(path, [transaction()])
    assert count_transactions(path) is None


def test_a_broken_jsonl_line_comes_back_raw_and_the_file_goes_on(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(
        '{"transaction_id": "tx-1"}\n{"transaction_id": "tx-2", \n[1, 2]\n{"transaction_id": "tx-3"}\n'
    )

    assert list(read_transactions(path)) == [
        {"transaction_id": "tx-1"},
        {"__raw__": '{"transaction_id": "tx-2", '},
        {"__raw__": "[1, 2]"},
        {"transaction_id": "tx-3"},
    ]


def test_a_jsonl_line_that_is_not_utf8_comes_back_raw_as_bytes(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\xfe{"b"}\r\n')

    assert list(read_transactions(path)) == [{"a": 1}, {"__raw__": b'\xff\xfe{"b"}'}]


def test_blank_jsonl_lines_and_a_byte_order_mark_are_skipped(tmp_path):
    path = tmp_path / "blank.ndjson"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n   \n{"b": 2}')

    assert list(read_transactions(path)) == [{"a": 1}, {"b": 2}]
    assert count_transactions(path) == 2


def test_raw_rows_are_written_back_to_jsonl_as_they_were_read(tmp_path):
    source = tmp_path / "source.jsonl"
    source.write_bytes(b'{"a":1}\nnot json\n\xff\n[]\n')
    copy = tmp_path / "copy.jsonl"

    write_transactions(copy, read_transactions(source))

    assert copy.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("suffix", FLAT_FORMATS)
def test_flat_formats_keep_leading_zeros_numeric_timestamps_and_extra_columns(tmp_path, suffix):
    rows = [
        transaction(merchant_category="0742", timestamp=1735689613, note="first"),
        transaction(transaction_id="tx-2", timestamp=1735689614.5, amount=12),
        transaction(transaction_id="tx-3", shipping_location={"lat": -4.779, "lon": 0}),
    ]
    path = tmp_path / f"flat.{suffix}"

    write_transactions(path, rows)

    assert list(read_transactions(path)) == rows


def test_csv_columns_are_flat_and_in_contract_order(tmp_path):
    path = tmp_path / "flat.csv"
    rows = [
        transaction(demo_pattern="burst"),
        transaction(billing_location={"lat": 1.5, "lon": 2.5}, merchant_category="5411"),
    ]

    write_transactions(path, rows)

    header = path.read_text().splitlines()[0]
    assert header == (
        "schema_version,transaction_id,account_id,amount,currency,timestamp,merchant_id,"
        "billing_location_lat,billing_location_lon,merchant_category,demo_pattern"
    )


def test_parquet_columns_are_flat_and_typed(tmp_path):
    path = tmp_path / "flat.parquet"

    write_transactions(path, [transaction(location={"lat": 1.5, "lon": 2.5})])

    schema = pq.read_schema(path)
    assert str(schema.field("amount").type) == "double"
    assert str(schema.field("location_lat").type) == "double"
    assert str(schema.field("schema_version").type) == "int64"
    assert str(schema.field("timestamp").type) == "string"


def test_a_hand_written_csv_reads_as_transactions(tmp_path):
    path = tmp_path / "hand.csv"
    path.write_text(
        "schema_version,transaction_id,account_id,amount,currency,timestamp,merchant_id,"
        "location_lat,location_lon,merchant_category,channel\n"
        "1,tx-1,acct-1, 57.49 ,USD,2025-01-01T00:00:13Z,m-1,-23.4,-46.4,0742,\n"
        "1,tx-2,acct-1,abc,USD,1735689613,m-1,,,,card_present\n"
    )

    assert list(read_transactions(path)) == [
        transaction(
            amount=57.49,
            location={"lat": -23.4, "lon": -46.4},
            merchant_category="0742",
            merchant_id="m-1",
        ),
        transaction(
            transaction_id="tx-2",
            amount="abc",
            timestamp=1735689613,
            merchant_id="m-1",
            channel="card_present",
        ),
    ]


locations = st.fixed_dictionaries(
    {
        "lat": st.floats(min_value=-90, max_value=90, allow_nan=False),
        "lon": st.floats(min_value=-180, max_value=180, allow_nan=False),
    }
)


@settings(max_examples=50, deadline=None)
@given(
    amount=st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
    location=locations,
    merchant_category=st.from_regex(r"[0-9]{4}", fullmatch=True),
    suffix=st.sampled_from(FLAT_FORMATS),
)
def test_any_amount_location_and_category_survive_a_flat_round_trip(
    amount, location, merchant_category, suffix
):
    row = transaction(amount=amount, location=location, merchant_category=merchant_category)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"one.{suffix}"
        write_transactions(path, [row])

        assert list(read_transactions(path)) == [row]
