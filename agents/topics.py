"""The one registry of topic names. Topic names are part of the public contract."""

from __future__ import annotations

from agents.contracts import AGENT_NAMES

TRANSACTIONS = "transactions"
DEAD_LETTERS = "transactions.dlq"
DECISION_REQUESTS = "agent.decision.requests"
DECISIONS = "decision.results"

# Internal topics (not part of the contract; all keyed for co-partitioning).
# Transactions whose key is not their account_id are re-keyed through this one,
# so a duplicate always meets its first copy on the same partition.
TRANSACTIONS_BY_ACCOUNT = "riskstream.transactions.by-account"
# velocity's second stage: per-merchant windows need the merchant_id as key.
VELOCITY_BY_MERCHANT = "riskstream.velocity.by-merchant"
# ordering=event_time: the orchestrator's watermarks, partition for partition
# beside agent.velocity.requests (see tables/watermarks.py).
VELOCITY_WATERMARKS = "riskstream.velocity.watermarks"
# decision deadlines, keyed by analysis_id, so a timer can act inside a stream.
DECISION_DEADLINES = "riskstream.decision.deadlines"

SERVICES = ("orchestrator", "velocity", "profile", "geo", "decision")


def requests_topic(agent: str) -> str:
    return f"agent.{agent}.requests"


def results_topic(agent: str) -> str:
    return f"agent.{agent}.results"


def contract_topics() -> list[str]:
    topics = [TRANSACTIONS, DEAD_LETTERS, DECISION_REQUESTS, DECISIONS]
    for agent in AGENT_NAMES:
        topics += [requests_topic(agent), results_topic(agent)]
    return topics


def internal_topics() -> list[str]:
    return [TRANSACTIONS_BY_ACCOUNT, VELOCITY_BY_MERCHANT, VELOCITY_WATERMARKS, DECISION_DEADLINES]


# Table names per service; a table's changelog topic is "<service>-<table>-changelog".
# Renaming one renames its changelog topic: that is a migration.
TABLES: dict[str, tuple[str, ...]] = {
    "orchestrator": ("seen_transactions",),
    "velocity": ("account_velocity", "merchant_velocity", "velocity_results"),
    "profile": ("account_profiles", "profile_results"),
    "geo": ("account_geo", "geo_results"),
    "decision": ("decisions",),
}


# What each service consumes: its consumer group's offsets are on these topics.
SOURCES: dict[str, tuple[str, ...]] = {
    "orchestrator": (TRANSACTIONS, TRANSACTIONS_BY_ACCOUNT),
    "velocity": (requests_topic("velocity"), VELOCITY_WATERMARKS, VELOCITY_BY_MERCHANT),
    "profile": (requests_topic("profile"),),
    "geo": (requests_topic("geo"),),
    "decision": (
        DECISION_REQUESTS,
        *(results_topic(a) for a in AGENT_NAMES),
        DECISION_DEADLINES,
    ),
}


def changelog_topic(service: str, table: str) -> str:
    return f"{service}-{table}-changelog"


def changelog_topics() -> list[str]:
    return [changelog_topic(s, t) for s, names in TABLES.items() for t in names]
