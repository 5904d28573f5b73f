"""The one settings object. Every RISKSTREAM_* environment variable is read here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEB_PORTS = {
    "orchestrator": 6066,
    "velocity": 6067,
    "profile": 6068,
    "geo": 6069,
    "decision": 6070,
}


class SettingsError(SystemExit):
    """A bad configuration value: startup stops with a message that names it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RISKSTREAM_", frozen=True, extra="ignore")

    # --- Kafka
    broker: str = "kafka://127.0.0.1:9092"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=16)
    # Group membership: Faust's defaults make a worker wait ~30 s for partitions.
    session_timeout_s: float = Field(10.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    rebalance_timeout_s: float = Field(10.0, gt=0)
    producer_linger_ms: float = Field(1.0, ge=0)
    # How long a fetch may wait for data. Each hop can cost up to this much on a
    # broker that does not wake a waiting multi-partition fetch (the embedded one).
    fetch_max_wait_ms: int = Field(20, ge=0, le=10_000)
    # At most this many messages a batching agent handles before it acknowledges
    # them and lets the rest of the worker run (agents/batches.py).
    batch_max_events: int = Field(500, ge=1, le=100_000)
    # How long the orchestrator and the agents may hold their tables' writes, and the
    # acknowledgements of the messages that made them, to write them out with
    # later batches' (agents/table_rows.py HeldWrites); 0: after every batch.
    table_write_interval_ms: int = Field(100, ge=0, le=10_000)
    # Check listed end offsets against a fetch before table recovery (see apps/compat.py).
    verify_end_offsets: bool = True

    # --- Kafka security (TLS and SASL)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # none: the system's trusted CAs
    ssl_certfile: Path | None = None  # client certificate, for mutual TLS
    ssl_keyfile: Path | None = None

    # --- Redis read model of decisions (decision service); off unless a URL is set
    redis_url: str | None = None
    redis_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    redis_timeout_ms: int = Field(200, ge=1)
    redis_queue_max: int = Field(100_000, ge=1)

    # --- State
    data_dir: Path = Path("var/data")
    store: str = "rocksdb://"
    block_cache_mb: int = Field(32, ge=1)
    write_buffer_mb: int = Field(8, ge=1)
    standby_replicas: int = Field(1, ge=0)

    # --- Web
    web_host: str = "127.0.0.1"
    web_bind: str = "0.0.0.0"
    web_port: int | None = Field(None, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- Decision policy
    # "deadline": decide when every agent answered or deadline_ms passed (live);
    # "wait_for_all": decide only when every agent answered (replay, rebuild), so
    # that the decisions do not depend on how fast history is read.
    decision_mode: Literal["deadline", "wait_for_all"] = "deadline"
    deadline_ms: int = Field(2000, ge=1)
    deadline_check_interval_ms: int = Field(100, ge=10)
    # How long after the deadline an answer stamped before it may still be on
    # its way into Kafka (in the agent's producer): an agent is named missing
    # only once its results partition was read this far past the deadline.
    deadline_grace_ms: int = Field(200, ge=0)
    # Agent results whose analysis request has not been read are dropped as
    # orphans once the requests of their partition are this far past them (by
    # timestamp), or none has been read for this long.
    orphan_after_ms: int = Field(60_000, ge=100)
    # Per partition, undecided joins holding one input (the request, or one
    # agent's result) from which that input is not fetched until half as many
    # hold it, unless it is what most joins wait for (see parts_to_hold).
    max_joins_ahead: int = Field(1000, ge=1)
    weight_velocity: float = Field(1.0, ge=0)
    weight_profile: float = Field(1.0, ge=0)
    weight_geo: float = Field(1.0, ge=0)
    review_threshold: float = Field(0.5, ge=0, le=1)
    decline_threshold: float = Field(0.8, ge=0, le=1)
    # What a missing agent does to the outcome: "ignore" scores on the agents that
    # answered; "review" makes the outcome at least review; "decline" declines.
    missing_agent_policy: Literal["ignore", "review", "decline"] = "review"

    # --- Event-time ordering (velocity's merchant stage)
    # "arrival": score each transaction as it arrives (live: lowest latency).
    # "event_time": the merchant stage holds transactions behind watermarks and
    # scores them in (event time, transaction_id) order, so merchant windows, and
    # with decision_mode=wait_for_all every decision, are the same whatever the
    # replay speed or partition count. Set it on the orchestrator and velocity.
    ordering: Literal["arrival", "event_time"] = "arrival"
    watermark_interval_ms: int = Field(100, ge=10)
    # A source partition read to its end and quiet this long stops holding the
    # others back: the end of a replay is released after this long.
    source_idle_ms: int = Field(2000, ge=100)

    # --- Agent state bounds
    max_events_per_account: int = Field(2000, ge=10)
    max_events_per_merchant: int = Field(20000, ge=10)
    # Memory for the windows velocity keeps parsed between transactions, estimated,
    # for each of its two stages (0: read each key from its table rows every time).
    window_cache_mb: int = Field(16, ge=0)
    allowed_lateness_s: int = Field(300, ge=0)
    impossible_travel_kmh: float = Field(900.0, gt=0)

    @field_validator("broker")
    @classmethod
    def _broker_is_url(cls, v: str) -> str:
        for url in v.split(";"):
            if "://" not in url or not url.split("://", 1)[1]:
                raise ValueError(f"{url!r} is not a broker URL like kafka://host:9092")
        return v

    @field_validator("store")
    @classmethod
    def _store_is_known(cls, v: str) -> str:
        if v not in ("rocksdb://", "memory://"):
            raise ValueError("store must be rocksdb:// or memory://")
        return v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a readable file")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return v or None

    @model_validator(mode="after")
    def _security_complete(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "security_protocol SASL_* needs RISKSTREAM_SASL_USERNAME and RISKSTREAM_SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("RISKSTREAM_SSL_CERTFILE and RISKSTREAM_SSL_KEYFILE go together")
        return self

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Settings:
        if self.review_threshold > self.decline_threshold:
            raise ValueError("review_threshold must not exceed decline_threshold")
        if self.weight_velocity + self.weight_profile + self.weight_geo <= 0:
            raise ValueError("at least one agent weight must be > 0")
        return self

    @property
    def bootstrap_servers(self) -> str:
        """host:port[,host:port] for plain Kafka clients."""
        return ",".join(u.split("://", 1)[1] for u in self.broker.split(";"))

    @property
    def agent_weights(self) -> dict[str, float]:
        return {
            "velocity": self.weight_velocity,
            "profile": self.weight_profile,
            "geo": self.weight_geo,
        }

    def port_for(self, service: str) -> int:
        return self.web_port or DEFAULT_WEB_PORTS[service]


def load_settings(**overrides: object) -> Settings:
    """Read the environment; a bad value stops startup with a message naming it."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            name = f"RISKSTREAM_{field.upper()}" if field else "settings"
            lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("riskstream: invalid configuration:\n" + "\n".join(lines)) from None
