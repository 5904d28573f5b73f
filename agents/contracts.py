"""The public contract (v1) as pydantic models, shared by every service.

Wire format is UTF-8 JSON encoded and decoded with orjson; the models only
validate and normalise. Times travel as RFC 3339 strings in UTC (``...Z``) and
are handled inside the services as integer epoch milliseconds.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
AGENT_NAMES = ("velocity", "profile", "geo")

# Fixed namespace for analysis ids: uuid5(ANALYSIS_NAMESPACE, transaction_id).
# Changing it changes every analysis_id ever issued: it is part of the contract.
ANALYSIS_NAMESPACE = uuid.UUID("6f1c0b1e-5b7a-4f0e-9a43-2d3c9e7a1b55")

Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Outcome = Literal["approve", "review", "decline"]
Channel = Literal["card_present", "card_not_present"]


def analysis_id_for(transaction_id: str) -> str:
    """The analysis id of a transaction: the same transaction is the same analysis.

    ``str(uuid.uuid5(ANALYSIS_NAMESPACE, transaction_id))``, made without the
    UUID object, whose checks cost more than the hash: 2.5 µs against 5.5.
    A unit test holds it to ``uuid.uuid5``.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + transaction_id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_NAMESPACE_BYTES = ANALYSIS_NAMESPACE.bytes


def ms_to_rfc3339(ms: int | float) -> str:
    """Epoch milliseconds to an RFC 3339 UTC string; whole seconds stay short.

    Integer milliseconds are formatted exactly from ``time.gmtime``: through
    ``datetime.fromtimestamp(ms / 1000)`` a float's rounding put about a
    quarter of the times after 2100 or before 1970 a millisecond early
    (2500-06-01T00:00:00.123Z came out as .122Z). Every transaction's time is
    normalised through here and every result and decision stamped, so the
    text of recent seconds is kept: the orchestrator formats a transaction's
    time and then its own, and each would put out the other's if only the
    last second were.
    """
    if type(ms) is not int:
        return _ms_to_rfc3339_via_datetime(ms)
    seconds, millis = divmod(ms, 1000)
    text = _second_text(seconds)
    return f"{text}.{millis:03d}Z" if millis else text + "Z"


@lru_cache(maxsize=1024)
def _second_text(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of epoch seconds."""
    if seconds >= _YEAR_1000:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    # strftime writes the years before 1000 without their leading zeros
    y, mo, d, h, mi, s = time.gmtime(seconds)[:6]
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


_YEAR_1000 = -30_610_224_000  # 1000-01-01T00:00:00Z in epoch seconds


def _ms_to_rfc3339_via_datetime(ms: int | float) -> str:
    """For fractional milliseconds, as before."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if int(ms) % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def rfc3339_to_ms(text: str) -> int:
    return int(round(_parse_rfc3339(text).timestamp() * 1000))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_rfc3339() -> str:
    return ms_to_rfc3339(now_ms())


def _parse_rfc3339(text: str) -> datetime:
    # RFC 3339 requires a 'T' or space separator and an explicit offset.
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError(f"timestamp {text!r} is not RFC 3339")
    candidate = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        dt = datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise ValueError(f"timestamp {text!r} is not RFC 3339") from exc
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return dt


class Location(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    lat: Annotated[StrictFloat | StrictInt, Field(ge=-90, le=90)]
    lon: Annotated[StrictFloat | StrictInt, Field(ge=-180, le=180)]


class Transaction(BaseModel):
    """Transaction, schema_version 1. Unknown extra fields are kept and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: Literal[1]
    transaction_id: Id
    account_id: Id
    amount: StrictFloat | StrictInt
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")]
    # Event time in epoch milliseconds; parsed from RFC 3339 or epoch seconds.
    timestamp: StrictStr | StrictFloat | StrictInt
    merchant_id: Id
    channel: Channel | None = None
    location: Location | None = None
    billing_location: Location | None = None
    shipping_location: Location | None = None
    merchant_category: Annotated[StrictStr, Field(pattern=r"^[0-9]{4}$")] | None = None

    @field_validator("amount")
    @classmethod
    def _amount_in_range(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0 or v > 1e9:
            raise ValueError("amount must be finite, > 0 and <= 10^9")
        return float(v)

    @field_validator("timestamp")
    @classmethod
    def _timestamp_parses(cls, v: str | float | int) -> str:
        # Normalised to an RFC 3339 UTC string so every service sees one form.
        if isinstance(v, str):
            return ms_to_rfc3339(rfc3339_to_ms(v))
        if not math.isfinite(v) or v < 0 or v > 32503680000:  # year 3000
            raise ValueError("epoch seconds out of range")
        return ms_to_rfc3339(round(v * 1000))

    # Each worked out once: the orchestrator asks for them more than once.

    @cached_property
    def event_time_ms(self) -> int:
        return rfc3339_to_ms(self.timestamp)

    @cached_property
    def analysis_id(self) -> str:
        return analysis_id_for(self.transaction_id)

    @cached_property
    def json_dict(self) -> dict[str, Any]:
        """The normalised body in JSON types, as sent on; one dict: read it, never change it."""
        return self.model_dump(mode="json", exclude_none=True)


class RequestedTransaction(BaseModel):
    """A transaction as an agent reads it in its request: what ``Transaction`` made of it.

    The orchestrator validated and normalised it (``Transaction``); the agents
    check only the shape of what they use, so that a stray message on their
    internal topic is unreadable rather than a crash: the types, the
    coordinates' ranges and that the time is RFC 3339. Not again the id
    lengths, the currency, the amount's range nor the time's normal form,
    which cost the agents 8 µs a request, more than profile's scoring.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    transaction_id: str
    account_id: str
    amount: float  # strict: an int is taken (as a float), a string or a bool is not
    timestamp: str
    merchant_id: str
    channel: Channel | None = None
    location: Location | None = None
    billing_location: Location | None = None
    shipping_location: Location | None = None
    merchant_category: str | None = None

    @cached_property
    def event_time_ms(self) -> int:
        """The time in epoch ms; ValueError if it is not RFC 3339 (``parse_request`` asks)."""
        return rfc3339_to_ms(self.timestamp)


# What the agents' steps read: the fields both have, alike.
TransactionFields = Transaction | RequestedTransaction


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    detail: str


class AgentReason(Reason):
    agent: str


class AnalysisRequest(BaseModel):
    """What the orchestrator fans out to each agent and to the decision service."""

    model_config = ConfigDict(extra="allow")

    schema_version: Literal[1] = 1
    analysis_id: str
    transaction_id: str
    account_id: str
    event_time: str
    requested_at: str
    transaction: dict[str, Any]
    # Only on agent.decision.requests:
    expected_agents: list[str] | None = None
    deadline_ms: int | None = None


class AgentResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: Literal[1] = 1
    analysis_id: str
    agent: str
    transaction_id: str
    account_id: str
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    reasons: list[Reason] = Field(default_factory=list)
    features: dict[str, Any] = Field(default_factory=dict)
    event_time: str
    processed_at: str


class AgentSummary(BaseModel):
    score: float
    reasons: list[Reason] = Field(default_factory=list)


class Decision(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: Literal[1] = 1
    analysis_id: str
    transaction_id: str
    account_id: str
    outcome: Outcome
    score: float
    reasons: list[AgentReason] = Field(default_factory=list)
    agents: dict[str, AgentSummary] = Field(default_factory=dict)
    missing_agents: list[str] = Field(default_factory=list)
    event_time: str
    decided_at: str
    latency_ms: float


DeadLetterReason = Literal[
    "invalid_json",
    "not_an_object",
    "missing_schema_version",
    "unknown_schema_version",
    "invalid_field",
    "conflicting_duplicate",
]


class SourcePosition(BaseModel):
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    reason: DeadLetterReason
    error: str
    source: SourcePosition
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    failed_at: str


def dumps(model: BaseModel) -> bytes:
    """Serialise a contract model to the wire (orjson)."""
    return orjson.dumps(model.model_dump(mode="json"))


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
