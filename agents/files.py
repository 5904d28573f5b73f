"""Reading and writing files of transactions: JSONL, CSV and Parquet.

JSONL holds one Transaction object per line, as on the wire. CSV and Parquet are
flat: each location becomes two columns (``location_lat``, ``location_lon``,
``billing_location_lat``, ...), nested back into ``{"lat", "lon"}`` on reading.

Reading is forgiving, because what to do with a bad transaction is the
orchestrator's decision, not the reader's: a JSONL line that is not a JSON
object comes back as ``{"__raw__": <the line>}`` for the caller to produce as it
is, and a CSV cell that should be a number but is not stays text.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

RAW = "__raw__"

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES

LOCATION_FIELDS = ("location", "billing_location", "shipping_location")
# flat column -> (nested field, coordinate)
LOCATION_COLUMNS = {
    f"{field}_{axis}": (field, axis) for field in LOCATION_FIELDS for axis in ("lat", "lon")
}
NUMERIC_COLUMNS = ("schema_version", "amount", *LOCATION_COLUMNS)
# Flat columns in contract order; columns nobody uses are left out, extras follow.
CONTRACT_COLUMNS = (
    "schema_version",
    "transaction_id",
    "account_id",
    "amount",
    "currency",
    "timestamp",
    "merchant_id",
    "channel",
    *LOCATION_COLUMNS,
    "merchant_category",
)

PARQUET_BATCH_ROWS = 10_000
SPOOL_MEMORY_BYTES = 16 * 1024 * 1024

# Plain decimal numbers only: "nan", "inf" or "1_000" stay text, so they fail
# validation downstream instead of turning into a different value here.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def read_transactions(path: str | Path) -> Iterator[dict]:
    """Every transaction in the file, in file order, streamed.

    Absent values are absent keys. A JSONL line that is not a JSON object is
    ``{"__raw__": line}``, line being str, or bytes when it is not UTF-8.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path)
    return _read_parquet(path)


def count_transactions(path: str | Path) -> int | None:
    """How many rows read_transactions will give, cheaply; None for an unsupported suffix.

    Parquet counts from the metadata. JSONL and CSV count non-blank lines
    (minus the CSV header), so a quoted multi-line CSV cell counts more than once.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return pq.ParquetFile(path).metadata.num_rows
    if suffix in JSONL_SUFFIXES or suffix in CSV_SUFFIXES:
        with path.open("rb") as lines:
            count = sum(1 for line in lines if line.strip())
        return max(count - 1, 0) if suffix in CSV_SUFFIXES else count
    return None


def write_transactions(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows in the format the suffix names; returns how many were written.

    JSONL writes a ``{"__raw__": line}`` row back as the line itself. CSV and
    Parquet write one column per key (locations flattened; other nested values
    as JSON text); keys a row lacks are empty cells.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix in JSONL_SUFFIXES:
        return _write_jsonl(path, rows)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        # The header needs every column, and a later row may bring a new one:
        # one pass to spool the flat rows and learn the columns, one to write.
        count, kinds = _spool_flat_rows(rows, spool)
        spool.seek(0)
        columns = _column_order(kinds)
        flat_rows = (orjson.loads(line) for line in spool)
        if suffix in CSV_SUFFIXES:
            _write_csv(path, columns, flat_rows)
        else:
            _write_parquet(path, columns, kinds, flat_rows)
    return count


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ValueError(
            f"{path}: unsupported suffix {path.suffix or '(none)'!r} (supported: {supported})"
        )
    return suffix


# -- JSONL -------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[dict]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines):
            if number == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                yield obj
            else:
                yield {RAW: _text_if_utf8(line)}


def _text_if_utf8(line: bytes) -> str | bytes:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    count = 0
    with path.open("wb") as out:
        for row in rows:
            raw = row.get(RAW) if len(row) == 1 else None
            if isinstance(raw, bytes):
                out.write(raw)
            elif isinstance(raw, str):
                out.write(raw.encode("utf-8"))
            else:
                out.write(orjson.dumps(row))
            out.write(b"\n")
            count += 1
    return count


# -- flat rows (CSV and Parquet) -----------------------------------------------


def _flatten(row: dict) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in row.items():
        if name in LOCATION_FIELDS and isinstance(value, dict):
            # Only the coordinates: the contract ignores anything else in a location.
            for axis in ("lat", "lon"):
                if value.get(axis) is not None:
                    flat[f"{name}_{axis}"] = value[axis]
        elif value is not None:
            flat[name] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict:
    """A flat row read back: numbers parsed, locations nested, absent values dropped."""
    row: dict = {}
    for name, value in flat.items():
        if value is None or value == "":
            continue
        if name in LOCATION_COLUMNS:
            field, axis = LOCATION_COLUMNS[name]
            location = row.setdefault(field, {})
            if isinstance(location, dict):
                location[axis] = _number_or_text(value)
        elif name in NUMERIC_COLUMNS or name == "timestamp":
            row[name] = _number_or_text(value)
        else:
            row[name] = value
    return row


def _number_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return value
    return int(text) if _INTEGER.fullmatch(text) else float(text)


def _kind(value: Any) -> str:
    # bool first: it is an int to Python but not to a Parquet column.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "other"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "other"


def _spool_flat_rows(rows: Iterable[dict], spool: IO[bytes]) -> tuple[int, dict[str, set[str]]]:
    """Write each flat row as a JSON line; returns the row count and column -> value kinds."""
    count = 0
    kinds: dict[str, set[str]] = {}  # insertion order is first appearance
    for row in rows:
        flat = _flatten(row)
        for name, value in flat.items():
            kinds.setdefault(name, set()).add(_kind(value))
        spool.write(orjson.dumps(flat, default=str))
        spool.write(b"\n")
        count += 1
    return count, kinds


def _column_order(kinds: dict[str, set[str]]) -> list[str]:
    contract = [name for name in CONTRACT_COLUMNS if name in kinds]
    extras = [name for name in kinds if name not in CONTRACT_COLUMNS]
    return contract + extras


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return orjson.dumps(value, default=str).decode()
    # repr gives the shortest text that reads back as the same float.
    return repr(value)


# -- CSV -----------------------------------------------------------------------


def _read_csv(path: Path) -> Iterator[dict]:
    # A cell that is not UTF-8 is damaged, not a reason to stop the file.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as text:
        for flat in csv.DictReader(text):
            flat.pop(None, None)  # cells beyond the header have no column name
            yield _nest(flat)


def _write_csv(path: Path, columns: list[str], flat_rows: Iterator[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as text:
        writer = csv.writer(text)
        writer.writerow(columns)
        for flat in flat_rows:
            writer.writerow([_as_text(flat[name]) if name in flat else "" for name in columns])


# -- Parquet -------------------------------------------------------------------


def _read_parquet(path: Path) -> Iterator[dict]:
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for flat in batch.to_pylist():
            yield _nest(flat)


def _arrow_type(kinds: set[str]) -> pa.DataType:
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds <= {"int", "float"}:
        return pa.float64()
    # Mixed or nested values become text; _nest parses numeric columns back.
    return pa.string()


def _write_parquet(
    path: Path, columns: list[str], kinds: dict[str, set[str]], flat_rows: Iterator[dict]
) -> None:
    schema = pa.schema([(name, _arrow_type(kinds[name])) for name in columns])
    as_text = [name for name in columns if schema.field(name).type == pa.string()]
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for flat in flat_rows:
            for name in as_text:
                if name in flat:
                    flat[name] = _as_text(flat[name])
            batch.append(flat)
            if len(batch) == PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or not columns:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
