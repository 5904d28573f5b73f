"""Velocity wiring, two stages: per-account windows, then per-merchant windows and the score.

Stage one runs on agent.velocity.requests (keyed by account_id) and forwards the
request with the account's windows to riskstream.velocity.by-merchant, keyed by
merchant_id, so that each merchant's windows live in one partition too.

With ``ordering=event_time`` the merchant stage scores in event-time order behind
watermarks (agents/ordering.py); with ``arrival`` it scores each as it comes.
"""

from __future__ import annotations

import faust
import orjson

from agents import topics
from agents.account_agent import parse_request
from agents.batches import Batches, input_topic
from agents.contracts import now_rfc3339, rfc3339_to_ms
from agents.ordering import MARKER, OrderedMerchantStage, RelayedWatermarks
from agents.output import Outgoing, Output
from agents.results import agent_result
from agents.scoring import VelocityRules, score_velocity
from agents.table_rows import HeldWrites, TableRows, watch_held_writes
from apps.metrics import Metrics
from apps.settings import Settings
from tables.agents import VelocityTables
from tables.hourly import BatchWrites, WindowCache
from tables.merchant_windows import MerchantWindow
from tables.windows import AccountWindow


def register(
    app: faust.App, settings: Settings, tables: VelocityTables, metrics: Metrics
) -> tuple[TableRows, TableRows]:
    """The stages' wiring; returns the account and merchant rows, whose held writes
    lookups read first.

    Both stages hold their tables' writes, and the acknowledgements of the
    messages that made them, for up to ``table_write_interval_ms``
    (``HeldWrites``), except the merchant stage in event-time order, which
    writes out each transaction it releases.
    """
    requests = input_topic(app, topics.requests_topic("velocity"))
    by_merchant = input_topic(app, topics.VELOCITY_BY_MERCHANT)
    forwards = Output(app, topics.VELOCITY_BY_MERCHANT)
    results = Output(app, topics.results_topic("velocity"))
    rules = VelocityRules()
    lateness_ms = settings.allowed_lateness_s * 1000
    ordered = settings.ordering == "event_time"
    relay = RelayedWatermarks(app, requests.get_topic_name(), by_merchant) if ordered else None
    # The tables as the stages read and write them (agents/table_rows.py).
    account_rows = TableRows(app, tables.account_velocity)
    merchant_rows = TableRows(app, tables.merchant_velocity)
    results_rows = TableRows(app, tables.results)
    held = HeldWrites(
        account_rows,
        *(() if ordered else (merchant_rows, results_rows)),
        interval_s=settings.table_write_interval_ms / 1000.0,
    )
    # Windows kept parsed between transactions, per stage.
    accounts = WindowCache(settings.window_cache_mb * 1024**2)
    merchants = WindowCache(settings.window_cache_mb * 1024**2)
    # Label lookups resolved once, not per event.
    late, published, scores, duplicates = (
        metrics.late_events.labels("velocity"),
        metrics.agent_results.labels("velocity"),
        metrics.agent_scores.labels("velocity"),
        metrics.duplicates.labels("velocity"),
    )

    def account_writes() -> BatchWrites[AccountWindow]:
        return BatchWrites(AccountWindow, accounts, account_rows, settings.max_events_per_account)

    def merchant_writes() -> BatchWrites[MerchantWindow]:
        return BatchWrites(
            MerchantWindow, merchants, merchant_rows, settings.max_events_per_merchant
        )

    @app.agent(requests, name="count_account_velocity")
    async def count_account_velocity(stream: faust.StreamT) -> None:
        # Acknowledged by ``held``, once the accounts' writes are written out.
        batches = Batches(
            stream,
            settings.batch_max_events,
            metrics.batches("count_account_velocity"),
            acks=False,
        )
        writes = account_writes()
        async for batch in batches:
            forwarded: list[Outgoing] = []
            for event in batches.each(batch):
                try:
                    request, tx = parse_request(event.value)
                except Exception as exc:
                    metrics.unreadable(event.message, exc)
                    continue  # skipped is processed: a marker may wait for it (below)
                key, time_ms = tx.account_id.encode(), tx.event_time_ms
                state = writes.load(key, time_ms)
                duplicate, is_late = state.add(
                    time_ms=time_ms,
                    transaction_id=tx.transaction_id,
                    amount=tx.amount,
                    merchant_id=tx.merchant_id,
                    max_events=settings.max_events_per_account,
                    allowed_lateness_ms=lateness_ms,
                )
                if duplicate:
                    duplicates.inc()
                    writes.kept(key, state)
                else:
                    writes.changed(key, state, event)
                if is_late:
                    late.inc()
                # A copy is forwarded too: stage two answers it with the result the
                # first one got (or, if that one never got that far, computes it).
                forward = {
                    "request": request,
                    "account_windows": state.windows(time_ms),
                    "duplicate": duplicate,
                }
                forwarded.append((tx.merchant_id.encode(), orjson.dumps(forward), None))
            await forwards.send_many(forwarded)
            writes.flush(batches.current)  # to the rows, where the next batches read them
            if relay is not None:
                # Each partition's last offset: everything before it was processed too.
                last = {event.message.partition: event.message.offset for event in batch}
                for partition, offset in last.items():
                    await relay.processed(partition, offset)
            await held.after_batch(batch)

    def score(
        forward: dict,
        time_ms: int,
        writes: BatchWrites[MerchantWindow],
        event: faust.EventT | None,
    ) -> tuple[bytes, bytes]:
        """(key, value) of the result to send; the merchant's rows wait in ``writes``."""
        request = forward["request"]
        tx = request["transaction"]
        analysis_key = request["analysis_id"].encode()
        previous = results_rows.get(tx["transaction_id"].encode())
        if previous is not None:
            # A copy: answer with the very result the first one got.
            return analysis_key, previous
        key = tx["merchant_id"].encode()
        state = writes.load(key, time_ms)
        duplicate, _late = state.add(
            time_ms=time_ms,
            transaction_id=tx["transaction_id"],
            account_id=tx["account_id"],
            max_events=settings.max_events_per_merchant,
            allowed_lateness_ms=lateness_ms,
        )
        if duplicate:
            writes.kept(key, state)
        else:
            writes.changed(key, state, event)
        scored = score_velocity(forward["account_windows"], state.windows(time_ms), rules)
        result = agent_result(
            "velocity",
            request,
            score=scored.score,
            reasons=list(scored.reasons),
            features=dict(scored.features),
            processed_at=now_rfc3339(),
        )
        encoded = orjson.dumps(result)
        results_rows[tx["transaction_id"].encode()] = encoded
        published.inc()
        scores.observe(result["score"])
        return analysis_key, encoded

    def read_forward(event: faust.EventT) -> tuple[dict, int] | None:
        try:
            forward = orjson.loads(event.value)
            if MARKER in forward:
                marker = forward[MARKER]
                int(marker["sender"]), int(marker["senders"]), marker["time_ms"]
                return forward, 0
            time_ms = rfc3339_to_ms(forward["request"]["event_time"])  # normalised upstream
            forward["request"]["transaction"]["transaction_id"]
            forward["request"]["transaction"]["merchant_id"]
        except Exception as exc:
            metrics.unreadable(event.message, exc)
            return None
        return forward, time_ms

    @app.on_partitions_revoked.connect
    async def forget_windows(app: faust.App, revoked: set, **kwargs: object) -> None:
        # Their next owner changes the rows; what this worker keeps again is read anew.
        if any(tp.topic == requests.get_topic_name() for tp in revoked):
            accounts.clear()
        if any(tp.topic == topics.VELOCITY_BY_MERCHANT for tp in revoked):
            merchants.clear()

    watch_held_writes(app, held)
    if relay is None:

        @app.agent(by_merchant, name="score_velocity")
        async def score_merchant_velocity(stream: faust.StreamT) -> None:
            # Acknowledged by ``held``, once the merchants' and results' writes are written out.
            batches = Batches(
                stream, settings.batch_max_events, metrics.batches("score_velocity"), acks=False
            )
            writes = merchant_writes()
            async for batch in batches:
                outgoing: list[Outgoing] = []  # sent with the batch; the tables' writes may be held
                for event in batches.each(batch):
                    read = read_forward(event)
                    if read is not None and MARKER not in read[0]:
                        outgoing.append((*score(*read, writes, event), None))
                writes.flush(batches.current)  # to the rows, where the next batches read them
                await results.send_many(outgoing)
                await held.after_batch(batch)

        return account_rows, merchant_rows

    async def score_now(forward: dict, time_ms: int) -> None:
        # Held transactions are released one at a time, within the stream's event.
        writes = merchant_writes()
        key, value = score(forward, time_ms, writes, None)
        writes.flush(lambda _event: None)  # the stream's event is current
        await merchant_rows.flush()
        await results_rows.flush()
        await results.send(key=key, value=value)

    watermarks = input_topic(app, topics.VELOCITY_WATERMARKS)
    stage = OrderedMerchantStage(score_now)

    @app.agent(watermarks, name="relay_watermarks")
    async def relay_watermarks(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                await relay.marker(event.message.partition, event.value)
            except (ValueError, KeyError, TypeError) as exc:
                metrics.unreadable(event.message, exc)

    @app.agent(by_merchant, name="score_velocity")
    async def score_merchant_velocity_in_order(stream: faust.StreamT) -> None:
        # Acknowledged by hand: a held transaction is acknowledged when scored.
        manual = stream.noack()
        stage.acks.ack = manual.ack
        async for event in manual.events():
            read = read_forward(event)
            if read is None:
                await stage.passed(event)
                continue
            forward, time_ms = read
            if MARKER in forward:
                await stage.on_marker(event, forward[MARKER])
            elif results_rows.get(forward["request"]["transaction"]["transaction_id"].encode()):
                await score_now(forward, time_ms)  # a copy of one already scored
                await stage.passed(event)
            elif await stage.on_event(event, forward, time_ms):
                metrics.behind_watermark.inc()
            metrics.held_transactions.set(stage.held())

    @app.on_partitions_revoked.connect
    async def drop_held(app: faust.App, revoked: set, **kwargs: object) -> None:
        stage.revoke({tp for tp in revoked if tp.topic == topics.VELOCITY_BY_MERCHANT})
        relay.revoke({tp.partition for tp in revoked if tp.topic == requests.get_topic_name()})

    return account_rows, merchant_rows
