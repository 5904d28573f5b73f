"""Orchestrator wiring: validate raw transactions, dead-letter the bad, fan out the good."""

from __future__ import annotations

import logging

import faust

from agents import topics
from agents.batches import Batches, input_topic
from agents.contracts import AGENT_NAMES, SourcePosition, Transaction, dumps, now_rfc3339
from agents.fanout import fan_out
from agents.ordering import install_source_watermarks
from agents.output import Outgoing, Output
from agents.table_rows import HeldWrites, TableRows, watch_held_writes
from agents.validation import Rejected, dead_letter, fingerprint, parse_transaction
from apps.metrics import Metrics
from apps.settings import Settings
from tables.orchestrator import OrchestratorTables

log = logging.getLogger(__name__)

# Re-keyed messages carry where they first arrived, so a dead letter names it.
SOURCE_HEADER = "riskstream-source"


def register(
    app: faust.App, settings: Settings, tables: OrchestratorTables, metrics: Metrics
) -> None:
    transactions = input_topic(app, topics.TRANSACTIONS)
    by_account = input_topic(app, topics.TRANSACTIONS_BY_ACCOUNT)
    to_by_account = Output(app, topics.TRANSACTIONS_BY_ACCOUNT)
    dead_letters = Output(app, topics.DEAD_LETTERS)
    decision_requests = Output(app, topics.DECISION_REQUESTS)
    seen = TableRows(app, tables.seen_transactions)
    # Both agents' batches: acknowledged once the ids they saw are written out.
    held = HeldWrites(seen, interval_s=settings.table_write_interval_ms / 1000.0)
    agent_requests = [Output(app, topics.requests_topic(name)) for name in AGENT_NAMES]
    velocity_requests = agent_requests[AGENT_NAMES.index("velocity")]
    request_outputs = [*agent_requests, decision_requests]
    watermarks = install_source_watermarks(app, settings)  # None unless ordering=event_time

    async def send_for(
        event: faust.EventT,
        parsed: Transaction | Rejected,
        may_rekey: bool,
        outgoing: dict[Output, list[Outgoing]],
    ) -> None:
        """Dead letters and re-keyed copies go out now; requests wait in ``outgoing``."""
        raw: bytes | None = event.value
        source = _source_of(event)
        if isinstance(parsed, Rejected):
            await _dead_letter(parsed, raw, event.key, source)
            return
        tx: Transaction = parsed
        account_key = tx.account_id.encode()
        if event.key != account_key:
            if may_rekey:
                # Duplicates must meet on one partition: route by account first.
                headers = {
                    SOURCE_HEADER: f"{source.topic}:{source.partition}:{source.offset}".encode()
                }
                await to_by_account.send(key=account_key, value=raw, headers=headers)
                return
            log.error("re-keyed message with key %r for account %r", event.key, tx.account_id)
        digest = fingerprint(tx)
        tx_key = tx.transaction_id.encode()
        known = seen.get(tx_key)
        if known is not None and known.decode() != digest:
            rejected = Rejected(
                "conflicting_duplicate",
                f"transaction_id {tx.transaction_id!r} was already accepted with a different body",
            )
            await _dead_letter(rejected, raw, event.key, source)
            return
        if known is None:
            seen[tx_key] = digest.encode()
            metrics.transactions_accepted.inc()
        else:
            # Same body again: a redelivery or a resend. Sending the requests again
            # is safe: agents and decision are idempotent per transaction.
            metrics.duplicates.labels("orchestrator").inc()
        out = fan_out(
            tx,
            requested_at=now_rfc3339(),
            expected_agents=list(AGENT_NAMES),
            deadline_ms=settings.deadline_ms,
        )
        for topic in agent_requests:
            outgoing[topic].append((account_key, out.agent_request, None))
        outgoing[decision_requests].append((out.analysis_id.encode(), out.decision_request, None))

    async def _dead_letter(
        rejected: Rejected, raw: bytes | None, key: bytes | None, source: SourcePosition
    ) -> None:
        letter = dead_letter(rejected, raw, source, now_rfc3339())
        metrics.dead_letters.labels(rejected.reason).inc()
        log.info("dead letter %s at %s: %s", rejected.reason, source, rejected.error)
        await dead_letters.send(key=key, value=dumps(letter))

    async def analyse(stream: faust.StreamT, name: str, may_rekey: bool) -> None:
        batches = Batches(stream, settings.batch_max_events, metrics.batches(name), acks=False)
        async for batch in batches:
            outgoing: dict[Output, list[Outgoing]] = {t: [] for t in request_outputs}
            parsed_batch = []  # for the watermarks, when kept
            for event in batches.each(batch):
                parsed = parse_transaction(event.value)
                await send_for(event, parsed, may_rekey, outgoing)
                if watermarks is not None:
                    parsed_batch.append((event, parsed))
            for topic, messages in outgoing.items():
                for sent in await topic.send_many(messages):
                    if watermarks is not None and topic is velocity_requests:
                        watermarks.sent_request(sent)
            if watermarks is not None:
                # Only now: their velocity requests are handed to the producer and
                # known to the next marker (the watermark timer runs between awaits).
                for event, parsed in parsed_batch:
                    watermarks.observe(
                        event, None if isinstance(parsed, Rejected) else parsed.event_time_ms
                    )
            await held.after_batch(batch)

    @app.agent(transactions, name="validate_transactions")
    async def validate_transactions(stream: faust.StreamT) -> None:
        await analyse(stream, "validate_transactions", may_rekey=True)

    @app.agent(by_account, name="analyse_rekeyed_transactions")
    async def analyse_rekeyed_transactions(stream: faust.StreamT) -> None:
        await analyse(stream, "analyse_rekeyed_transactions", may_rekey=False)

    watch_held_writes(app, held)


def _source_of(event: faust.EventT) -> SourcePosition:
    headers = event.message.headers or []
    for name, value in headers if isinstance(headers, list) else headers.items():
        if name == SOURCE_HEADER and value:
            topic, partition, offset = value.decode().rsplit(":", 2)
            return SourcePosition(topic=topic, partition=int(partition), offset=int(offset))
    msg = event.message
    return SourcePosition(topic=msg.topic, partition=msg.partition, offset=msg.offset)
