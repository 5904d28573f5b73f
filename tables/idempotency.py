"""The envelope every per-account agent record lives in, and its redelivery memory. Pure.

Shape: {"state": <agent state dict or None>, "recent": {transaction_id: <AgentResult dict>}}
`recent` holds the last `keep` results in arrival order, so a redelivered request
gets the very result it got the first time and the state is not touched twice.
"""

from __future__ import annotations

from typing import Any

import orjson

Record = dict[str, Any]


def load_record(raw: bytes | None) -> Record:
    if raw is None:
        return {"state": None, "recent": {}}
    return orjson.loads(raw)


def dump_record(record: Record) -> bytes:
    return orjson.dumps(record)


def previous_result(record: Record, transaction_id: str) -> dict[str, Any] | None:
    return record["recent"].get(transaction_id)


def with_result(
    record: Record, state: dict[str, Any], transaction_id: str, result: dict[str, Any], keep: int
) -> Record:
    recent = dict(record["recent"])
    recent[transaction_id] = result
    while len(recent) > keep:
        del recent[next(iter(recent))]
    return {"state": state, "recent": recent}
