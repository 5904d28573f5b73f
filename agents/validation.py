"""Turning raw bytes from `transactions` into a Transaction or a DeadLetter.

Pure: no app, no broker. The orchestrator calls `parse_transaction` inside a
try-free path; every failure is a value, never an exception.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from agents.contracts import (
    SUPPORTED_SCHEMA_VERSIONS,
    DeadLetter,
    DeadLetterReason,
    SourcePosition,
    Transaction,
)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: DeadLetterReason
    error: str


def parse_transaction(raw: bytes | None) -> Transaction | Rejected:
    """Validate one message value against Transaction v1."""
    if raw is None:
        return Rejected("invalid_json", "message has no value")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Rejected("invalid_json", "value is not UTF-8")
        return Rejected("invalid_json", f"value is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejected("not_an_object", f"value is a JSON {_json_kind(obj)}, not an object")
    if "schema_version" not in obj:
        return Rejected("missing_schema_version", "schema_version is missing")
    version = obj["schema_version"]
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        return Rejected(
            "unknown_schema_version",
            f"schema_version {orjson.dumps(version).decode()} is not supported (supported: {supported})",
        )
    try:
        return Transaction.model_validate(obj)
    except ValidationError as exc:
        return Rejected("invalid_field", _describe(exc))


def fingerprint(tx: Transaction) -> str:
    """A digest of the normalised body: equal for a redelivery, different for a conflict."""
    body = orjson.dumps(tx.json_dict, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def dead_letter(
    rejected: Rejected, raw: bytes | None, source: SourcePosition, failed_at: str
) -> DeadLetter:
    payload, encoding = encode_payload(raw)
    return DeadLetter(
        reason=rejected.reason,
        error=rejected.error,
        source=source,
        payload=payload,
        payload_encoding=encoding,
        failed_at=failed_at,
    )


def encode_payload(raw: bytes | None) -> tuple[str, str]:
    if raw is None:
        return "", "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _json_kind(obj: object) -> str:
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, bool):
        return "boolean"
    if obj is None:
        return "null"
    return "number"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
