"""Business metrics, beside Faust's own Prometheus sensor, on the app's registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_EVENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)


@dataclass(frozen=True)
class Metrics:
    transactions_accepted: Counter
    duplicates: Counter
    dead_letters: Counter
    agent_results: Counter
    agent_scores: Histogram
    late_events: Counter
    invalid_internal: Counter
    decisions: Counter
    decision_latency: Histogram
    missing_agents: Counter
    late_results: Counter
    held_transactions: Gauge
    behind_watermark: Counter
    pending_analyses: Gauge
    orphaned_results: Counter
    inputs_paused: Counter
    deadline_waits: Counter
    batch_seconds: Histogram
    batch_events: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"riskstream_{name}", doc, labels, registry=registry)

        return cls(
            transactions_accepted=counter(
                "transactions_accepted", "Valid transactions analysed for the first time"
            ),
            duplicates=counter(
                "duplicate_transactions", "Transactions seen again with the same body", ("service",)
            ),
            dead_letters=counter("dead_letters", "Messages sent to transactions.dlq", ("reason",)),
            agent_results=counter("agent_results", "Agent results published", ("agent",)),
            agent_scores=Histogram(
                "riskstream_agent_score",
                "Scores published by each agent",
                ("agent",),
                buckets=SCORE_BUCKETS,
                registry=registry,
            ),
            late_events=counter(
                "late_events", "Events later than the allowed lateness (still scored)", ("agent",)
            ),
            invalid_internal=counter(
                "invalid_internal_messages", "Internal messages that could not be read", ("topic",)
            ),
            decisions=counter("decisions", "Decisions published", ("outcome",)),
            decision_latency=Histogram(
                "riskstream_decision_latency_seconds",
                "From the analysis request to the decision",
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            missing_agents=counter(
                "missing_agents", "Decisions made without an agent's answer", ("agent",)
            ),
            late_results=counter(
                "late_agent_results", "Agent results that arrived after the decision", ("agent",)
            ),
            held_transactions=Gauge(
                "riskstream_held_transactions",
                "ordering=event_time: transactions velocity's merchant stage holds behind the watermark",
                registry=registry,
            ),
            behind_watermark=counter(
                "behind_watermark",
                "ordering=event_time: transactions that came after a later one was scored (scored at once)",
            ),
            pending_analyses=Gauge(
                "riskstream_pending_analyses",
                "Analyses the decision service is joining and has not decided yet",
                registry=registry,
            ),
            orphaned_results=counter(
                "orphaned_agent_results",
                "Agent results dropped because their analysis request never came",
            ),
            batch_seconds=Histogram(
                "riskstream_batch_seconds",
                "Time an agent took to handle one batch of its input (agents/batches.py)",
                ("agent",),
                buckets=BATCH_SECONDS_BUCKETS,
                registry=registry,
            ),
            batch_events=Histogram(
                "riskstream_batch_events",
                "Messages in one batch an agent handled",
                ("agent",),
                buckets=BATCH_EVENTS_BUCKETS,
                registry=registry,
            ),
            inputs_paused=counter(
                "decision_inputs_paused",
                "Times the decision service stopped fetching one input of a partition "
                "because it ran ahead of the others",
            ),
            deadline_waits=counter(
                "deadline_waits",
                "Analyses past their deadline not decided yet because a missing agent's "
                "results were not read up to the deadline",
            ),
        )

    def batches(self, agent: str) -> Callable[[int, float], None]:
        """What ``agents.batches.Batches`` reports of each batch: (messages, seconds)."""
        events, seconds = self.batch_events.labels(agent), self.batch_seconds.labels(agent)

        def observe(size: int, took_s: float) -> None:
            events.observe(size)
            seconds.observe(took_s)

        return observe

    def unreadable(self, message: Any, exc: Exception) -> None:
        """An internal message that does not parse: counted and logged, then skipped."""
        self.invalid_internal.labels(message.topic).inc()
        log.error("unreadable message at %s: %r", message.tp, exc)
