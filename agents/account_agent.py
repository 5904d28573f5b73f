"""Wiring shared by the per-account agents (profile, geo): read, step, store, send.

The agent-specific part is a pure `step(state, transaction) -> Step` function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import faust
import orjson

from agents import topics
from agents.batches import Batches, input_topic
from agents.contracts import RequestedTransaction, TransactionFields, now_rfc3339
from agents.output import Outgoing, Output
from agents.results import agent_result
from agents.steps import Step
from agents.table_rows import HeldWrites, TableRows, watch_held_writes
from apps.metrics import Metrics
from tables.agents import AccountTables

StepFn = Callable[[dict[str, Any] | None, TransactionFields], Step]


def parse_request(raw: bytes | None) -> tuple[dict[str, Any], RequestedTransaction]:
    """A request and its transaction; raises if either is not what the orchestrator sends."""
    request = orjson.loads(raw)  # type: ignore[arg-type]
    tx = RequestedTransaction.model_validate(request["transaction"])
    tx.event_time_ms  # noqa: B018 - a time that is not RFC 3339 raises here, not in a step
    return request, tx


class Rows(Protocol):
    """A table's rows as the agent reads and writes them (``agents.table_rows.TableRows``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...


class Scored(NamedTuple):
    result: bytes  # the AgentResult, encoded
    step: Step | None  # None: the transaction was answered before, and this is that answer
    score: float | None  # as published (clamped to [0, 1])


def score_request(
    agent: str,
    request: dict[str, Any],
    tx: TransactionFields,
    step: StepFn,
    accounts: Rows,
    results: Rows,
) -> Scored:
    """One request's result, as bytes, and the step and score that made it.

    A new transaction steps its account's state; the state and the result are
    written to their rows. A transaction answered before gets the same result again.
    """
    tx_key = tx.transaction_id.encode()
    previous = results.get(tx_key)
    if previous is not None:
        return Scored(previous, None, None)
    key = tx.account_id.encode()
    state = accounts.get(key)
    out = step(orjson.loads(state) if state else None, tx)
    result = agent_result(
        agent,
        request,
        score=out.score,
        reasons=out.reasons,
        features=out.features,
        processed_at=now_rfc3339(),
    )
    encoded = orjson.dumps(result)
    accounts[key] = orjson.dumps(out.state)
    results[tx_key] = encoded
    return Scored(encoded, out, result["score"])


def register_account_agent(
    app: faust.App,
    agent: str,
    tables: AccountTables,
    step: StepFn,
    metrics: Metrics,
    *,
    max_events: int,
    write_interval_s: float = 0.0,
) -> TableRows:
    """The agent's wiring; returns its accounts' rows, whose held writes lookups read first.

    ``write_interval_s``: how long the tables' writes, and the acknowledgements
    of the requests that made them, may be held to be written out with later
    batches' (``HeldWrites``); 0: after every batch.
    """
    requests = input_topic(app, topics.requests_topic(agent))
    results = Output(app, topics.results_topic(agent))
    # Label lookups resolved once, not per event.
    late, published, scores, duplicates = (
        metrics.late_events.labels(agent),
        metrics.agent_results.labels(agent),
        metrics.agent_scores.labels(agent),
        metrics.duplicates.labels(agent),
    )

    accounts, results_table = TableRows(app, tables.accounts), TableRows(app, tables.results)
    held = HeldWrites(accounts, results_table, interval_s=write_interval_s)

    async def score_accounts(stream: faust.StreamT) -> None:
        # Acknowledged by ``held``, once the tables' writes are written out.
        batches = Batches(stream, max_events, metrics.batches(f"score_{agent}"), acks=False)
        async for batch in batches:
            outgoing: list[Outgoing] = []  # sent with the batch; the tables' writes may be held
            for event in batches.each(batch):
                try:
                    request, tx = parse_request(event.value)
                except Exception as exc:  # an internal topic, but never crash on input
                    metrics.unreadable(event.message, exc)
                    continue
                scored = score_request(agent, request, tx, step, accounts, results_table)
                if scored.step is None:
                    duplicates.inc()
                else:
                    if scored.step.late:
                        late.inc()
                    published.inc()
                    scores.observe(scored.score)
                outgoing.append((request["analysis_id"].encode(), scored.result, None))
            await results.send_many(outgoing)
            # An account with several transactions in the batches held: one changelog message.
            await held.after_batch(batch)

    app.agent(requests, name=f"score_{agent}")(score_accounts)
    watch_held_writes(app, held)
    return accounts
