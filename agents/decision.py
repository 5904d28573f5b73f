"""Decision wiring: join the request and agent results by analysis_id, decide once.

Every input is keyed by analysis_id and has the same partition count, so the
request, the three results and the deadline tick of one analysis meet in one
partition, in one worker, in one table row.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import faust
import orjson
from faust.types import TP, Message

from agents import topics
from agents.batches import Batches, input_topic
from agents.consumer import read_to_end
from agents.contracts import AGENT_NAMES, ms_to_rfc3339, now_ms
from agents.decide import Policy, decide
from agents.ordering import OrderedAcks, set_fetching
from agents.output import Outgoing, Output
from agents.table_rows import TableRows
from apps.metrics import Metrics
from apps.settings import Settings
from tables.decision import DecisionTables
from tables.join_state import (
    REQUEST,
    Analysis,
    OverdueJoins,
    Pending,
    PendingJoins,
    ReadPositions,
    answer_of,
    complete,
    parts_to_hold,
    request_of,
    unread_answers,
    with_request,
    with_result,
)

log = logging.getLogger(__name__)

RESULT_TOPICS = {topics.results_topic(a): a for a in AGENT_NAMES}
PART_TOPICS = {
    REQUEST: topics.DECISION_REQUESTS,
    **{a: topics.results_topic(a) for a in AGENT_NAMES},
}
PARTS = tuple(PART_TOPICS)
ORPHAN_CHECK_INTERVAL_S = 5.0  # how often results without a request are looked for


def policy_from(settings: Settings) -> Policy:
    return Policy(
        weights=settings.agent_weights,
        review_threshold=settings.review_threshold,
        decline_threshold=settings.decline_threshold,
        missing_agent_policy=settings.missing_agent_policy,
    )


def register(
    app: faust.App,
    settings: Settings,
    tables: DecisionTables,
    metrics: Metrics,
    on_decided: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """`on_decided` sees every published decision (the Redis read model); it must not block.

    Undecided joins live in memory only (``PendingJoins``): the messages that
    built one stay unacknowledged until it is decided (``OrderedAcks``), so a
    crash or a rebalance reads them again and builds the join again. Only the
    decision itself is written to a table.
    """
    policy = policy_from(settings)
    inputs = input_topic(app, topics.DECISION_REQUESTS, *RESULT_TOPICS, topics.DECISION_DEADLINES)
    input_names = set(inputs.topics)
    deadlines = Output(app, topics.DECISION_DEADLINES)
    decisions_out = Output(app, topics.DECISIONS)
    decided = TableRows(app, tables.decisions)
    joins = PendingJoins()
    positions = ReadPositions()  # how far each results partition has been read
    overdue = OverdueJoins()  # past the deadline, an answer maybe still unread
    acks = OrderedAcks()
    due: list[tuple[int, str]] = []  # (deadline epoch ms, analysis_id), a heap
    wait_for_all = settings.decision_mode == "wait_for_all"
    grace_ms = settings.deadline_grace_ms
    metrics.pending_analyses.set_function(joins.__len__)
    ahead_limit = settings.max_joins_ahead
    holding_back: dict[int, set[str]] = {}  # by partition: parts whose topic is not fetched
    outcome_counters = {o: metrics.decisions.labels(o) for o in ("approve", "review", "decline")}

    # Decided in the batch so far: published, then acknowledged, once it ends.
    decided_now: list[tuple[bytes, dict[str, Any], Pending | list]] = []  # list: an acks entry

    async def publish_decided() -> None:
        """Write the batch's decisions, publish them, then acknowledge what made them."""
        if not decided_now:
            return
        done = decided_now.copy()
        decided_now.clear()
        await decided.flush()
        await decisions_out.send_many((key, orjson.dumps(doc), None) for key, doc, _ in done)
        for _key, doc, made_by in done:
            if on_decided is not None:
                on_decided(doc)
            if isinstance(made_by, Pending):
                await release(made_by)
            else:
                await acks.done(made_by)

    async def release(pending: Pending) -> None:
        for entry in pending.tokens:
            await acks.done(entry)

    async def hold_back(partition: int) -> None:
        # Each input topic is read at its own speed when catching up on a
        # backlog; one running ahead would fill memory with joins waiting for
        # the others (see parts_to_hold).
        held = holding_back.get(partition, set())
        want = parts_to_hold(
            joins.holding(partition), joins.waiting(partition), PARTS, ahead_limit, held
        )
        if want == held:
            return
        holding_back[partition] = want
        if want - held:
            metrics.inputs_paused.inc(len(want - held))
            await set_fetching(app, _tps(want - held, partition), fetch=False)
        if held - want:
            if REQUEST in held:  # not having read requests for a while was our doing
                joins.requests_held_back(partition, now_ms())
            await set_fetching(app, _tps(held - want, partition), fetch=True)

    async def join_and_decide(stream: faust.StreamT) -> None:
        # Acknowledged by hand: a message is acknowledged once its analysis is decided.
        batches = Batches(
            stream, settings.batch_max_events, metrics.batches("join_and_decide"), acks=False
        )
        acks.ack = ack_message
        async for batch in batches:
            for event in batches.each(batch):
                await join(event)
            decide_overdue()
            # Once a batch, for each partition it read: what to hold back
            # depends on the joins it leaves, not on each message's.
            for partition in {event.message.partition for event in batch}:
                await hold_back(partition)
            await publish_decided()

    async def ack_message(message: Message) -> bool:
        return message.ack(app.consumer)  # what event.ack() does

    def read_past(topic: str, partition: int, at_ms: int) -> bool:
        """Whether nothing produced before ``at_ms`` is left unread in this results partition.

        An answer is stamped by the agent's producer before it is in Kafka, so
        the partition must have been read ``deadline_grace_ms`` past ``at_ms``:
        a message stamped that late was read there, or its high watermark was
        fetched that late. Where this worker cannot tell (the partition not
        fetched yet), it counts as read: the deadline then decides on what is
        there, as live.
        """
        at_ms += grace_ms
        if positions.stamped_past(topic, partition, at_ms):
            return True
        next_offset = positions.next_offset(topic, partition)
        return read_to_end(app, TP(topic, partition), next_offset, as_of_ms=at_ms) is not False

    def still_unread(state: Analysis, partition: int) -> list[str]:
        return unread_answers(
            state,
            state.deadline_ms,
            lambda agent, at_ms: read_past(PART_TOPICS[agent], partition, at_ms),
        )

    def overdue_ready() -> Iterator[tuple[Pending, list[Any]]]:
        """The joins put aside whose results partition was since read up to their deadline.

        With each, the position it is to be decided by.
        """
        for topic, partition in overdue.partitions():
            for analysis_id in overdue.ready(
                topic, partition, partial(read_past, topic, partition)
            ):
                pending = joins.get(analysis_id)
                if pending is not None and pending.decide_by is not None:
                    yield pending, pending.decide_by  # else decided, or built again since

    def decide_overdue() -> None:
        """After a batch: decide the joins put aside that it read far enough for."""
        for pending, decide_by in overdue_ready():
            if not waits_for_unread(pending, decide_by):
                settle(pending, pending.state, decide_by, now_ms())

    def wait_for(pending: Pending, agent: str) -> None:
        state = pending.state
        overdue.wait(PART_TOPICS[agent], pending.partition, state.deadline_ms, state.analysis_id)

    async def join(event: faust.EventT) -> None:
        msg = event.message
        # Held until decided, a message is kept by itself, not with its event:
        # fewer objects for the cycle collector to go through while joins wait.
        entry = acks.track(msg, msg.tp)
        stamp_ms = int(msg.timestamp * 1000)
        if msg.topic in RESULT_TOPICS:  # read, whatever it holds: see read_past
            positions.saw(msg.topic, msg.partition, msg.offset, stamp_ms)
        try:
            body: dict[str, Any] = orjson.loads(event.value)
            analysis_id: str = body["analysis_id"]
            # What the decision uses of an answer; the features stay in the agent's result.
            answer = answer_of(body) if msg.topic in RESULT_TOPICS else None
            request = request_of(body) if msg.topic == topics.DECISION_REQUESTS else None
        except Exception as exc:  # an internal topic, but never crash on input
            metrics.unreadable(msg, exc)
            await acks.done(entry)
            return
        key = analysis_id.encode()
        if msg.topic == topics.DECISION_REQUESTS:
            joins.saw_request(msg.partition, stamp_ms, now_ms())
        pending = joins.get(analysis_id)
        if pending is None:
            done = decided.get(key)
            if done is not None:
                record = orjson.loads(done)
                if record["decided_by"] == [msg.topic, msg.partition, msg.offset]:
                    # The message that made the decision came again (we crashed
                    # before committing it): publish the same decision again.
                    decided_now.append((key, record["decision"], entry))
                    return
                if msg.topic in RESULT_TOPICS:
                    metrics.late_results.labels(RESULT_TOPICS[msg.topic]).inc()
                await acks.done(entry)
                return
            if msg.topic == topics.DECISION_DEADLINES:
                # Not a join of ours (any more): whoever reads its request
                # schedules its deadline again.
                await acks.done(entry)
                return
        pending = joins.add(analysis_id, msg.partition, entry, now_ms(), stamp_ms)
        # A held message is kept only to be acknowledged: let its bytes go.
        event.value = msg.value = msg.headers = None
        state = pending.state
        if request is not None:
            state = with_request(state, request)
            if not wait_for_all and state is not pending.state:
                pending.request_at = [msg.topic, msg.partition, msg.offset]
                heapq.heappush(due, (state.deadline_ms, analysis_id))
        elif answer is not None:
            state = with_result(state, answer)
        joins.update(pending, state)

        now = now_ms()
        deadline_passed = (
            not wait_for_all
            and msg.topic == topics.DECISION_DEADLINES
            and state.request is not None
            and now >= state.deadline_ms
        )
        if not (complete(state) or deadline_passed):
            return
        position = [msg.topic, msg.partition, msg.offset]
        if not complete(state) and waits_for_unread(pending, position):
            return
        settle(pending, state, position, now)

    def waits_for_unread(pending: Pending, decide_by: list[Any]) -> bool:
        """Puts a join past its deadline aside while an answer made in time may be unread.

        Behind a backlog an answer can still wait in Kafka: the join is then
        decided after a batch that read its results partition up to the
        deadline (``decide_overdue``), by the message at ``decide_by``.
        """
        unread = still_unread(pending.state, pending.partition)
        if not unread:
            return False
        if pending.decide_by is None:
            metrics.deadline_waits.inc()
        pending.decide_by = decide_by
        wait_for(pending, unread[0])
        return True

    def settle(pending: Pending, state: Analysis, position: list[Any], now: int) -> None:
        """Decide the join now; the decision is published with the batch's, by ``position``."""
        analysis_id = state.analysis_id
        key = analysis_id.encode()
        doc = decide(
            state,
            policy,
            decided_at=ms_to_rfc3339(now),
            latency_ms=float(now - state.requested_ms),
        )
        # An overdue join is decided after its batch: not by the current event.
        decided.put(key, orjson.dumps({"decision": doc, "decided_by": position}), pending.partition)
        joins.pop(analysis_id)
        decided_now.append((key, doc, pending))
        outcome_counters[doc["outcome"]].inc()
        metrics.decision_latency.observe(max(0.0, doc["latency_ms"]) / 1000.0)
        for agent in doc["missing_agents"]:
            metrics.missing_agents.labels(agent).inc()

    app.agent(inputs, name="join_and_decide")(join_and_decide)

    @app.timer(interval=settings.deadline_check_interval_ms / 1000.0)
    async def fire_deadlines() -> None:
        # A join is decided inside its stream, so a deadline is a message, sent
        # once per join: until it is read back, the join stays as it is. Where
        # an answer may still be unread, the join is put aside instead, by its
        # request's position (unacknowledged until it is decided): a batch that
        # reads that far decides it (decide_overdue), and if none comes (the
        # partition was read, but its high watermark not fetched since the
        # deadline), its tick goes out here once it is. Behind a backlog many
        # are due at once: the ticks go out as one record batch per partition.
        now = now_ms()
        fired_at = ms_to_rfc3339(now)
        ticks = [
            deadline_tick(pending.state.analysis_id, fired_at)
            for pending in due_joins(due, joins, now)
            if pending.request_at is None or not waits_for_unread(pending, pending.request_at)
        ]
        ticks += [
            deadline_tick(pending.state.analysis_id, fired_at)
            for pending, decide_by in overdue_ready()
            if not waits_for_unread(pending, decide_by)
        ]
        await deadlines.send_many(ticks)

    @app.timer(interval=ORPHAN_CHECK_INTERVAL_S)
    async def drop_orphans() -> None:
        # Results whose request never comes would hold their partitions' commits
        # back for ever: let them go (they are counted and logged).
        now = now_ms()
        for partition, held in holding_back.items():
            if REQUEST in held:
                joins.requests_held_back(partition, now)
        for pending in joins.orphans(now, settings.orphan_after_ms):
            joins.pop(pending.state.analysis_id)
            metrics.orphaned_results.inc(len(pending.tokens))
            log.warning(
                "analysis %s: %d results and no request %.0f s on; dropped",
                pending.state.analysis_id,
                len(pending.tokens),
                settings.orphan_after_ms / 1000,
            )
            await release(pending)
        for partition in list(holding_back):
            await hold_back(partition)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: faust.App, revoked: set, **kwargs: object) -> None:
        mine = {tp for tp in revoked if tp.topic in input_names}
        acks.revoke(mine)
        partitions = {tp.partition for tp in mine}
        for partition in partitions:  # their next assignment starts fetching again
            holding_back.pop(partition, None)
        positions.forget(partitions)
        overdue.drop_partitions(partitions)
        dropped = joins.drop_partitions(partitions)
        if dropped:
            log.info(
                "%d undecided analyses left to the next owner of their partitions", len(dropped)
            )


def due_joins(due: list[tuple[int, str]], joins: PendingJoins, now: int) -> list[Pending]:
    """The undecided joins whose deadline has passed by ``now``, taken off the ``due`` heap.

    Each once: a join decided meanwhile, or handed to another worker, is left out.
    """
    out: list[Pending] = []
    while due and due[0][0] <= now:
        _, analysis_id = heapq.heappop(due)
        pending = joins.get(analysis_id)
        if pending is None or pending.deadline_sent:
            continue
        pending.deadline_sent = True
        out.append(pending)
    return out


def deadline_tick(analysis_id: str, fired_at: str) -> Outgoing:
    """The message that brings a join back to its stream once its deadline passed."""
    tick = {"analysis_id": analysis_id, "fired_at": fired_at}
    return (analysis_id.encode(), orjson.dumps(tick), None)


def _tps(parts: set[str], partition: int) -> set[TP]:
    return {TP(PART_TOPICS[part], partition) for part in parts}
