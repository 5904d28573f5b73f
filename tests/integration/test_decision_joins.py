"""Undecided joins live in the decision worker's memory, not in a table.

What keeps them is that their messages are not committed until the analysis is
decided: a crash or a rebalance reads them again. Both are tested here with a
real broker and the services as processes, in wait_for_all mode so that no
deadline decides an analysis while an agent is away.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from agents import topics
from apps.bench_state import inputs_for
from apps.broker import free_port
from tests.integration.conftest import running_stack, wait_for
from tests.integration.test_pipeline import as_messages, demo_transactions
from tests.kafka_helpers import produce

ORPHAN_AFTER_MS = 3000
# Above the joins one partition gets of the 40 held without geo below (10 on
# average), below those it gets of the 200 whose results come first (50).
JOINS_AHEAD = 25
WAIT_FOR_ALL = {
    "RISKSTREAM_DECISION_MODE": "wait_for_all",
    "RISKSTREAM_ORPHAN_AFTER_MS": str(ORPHAN_AFTER_MS),
    "RISKSTREAM_MAX_JOINS_AHEAD": str(JOINS_AHEAD),
}
PENDING = "riskstream_pending_analyses"
ORPHANED = "riskstream_orphaned_agent_results_total"
PAUSED = "riskstream_decision_inputs_paused_total"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, "decision-joins", WAIT_FOR_ALL) as s:
        yield s


def pending_in(stack, *workers: str) -> float:
    return sum(stack.metric(PENDING, of=w) for w in workers)


def hold_joins_without_geo(stack, run_id: str, n: int, seed: int) -> tuple[set[str], int]:
    """Stop geo, send n transactions, wait until decision holds all n joins."""
    geo = stack.supervisor.services["geo"]
    stack.supervisor.stop("geo")
    txs = demo_transactions(run_id, n, seed=seed)
    produce(stack.bootstrap, as_messages(txs))
    wait_for(
        lambda: pending_in(stack, "decision") == n,
        timeout_s=60,
        what=f"{n} joins waiting for geo",
    )
    time.sleep(4)  # past Faust's commit interval: whatever could be committed, is
    return {tx["transaction_id"] for tx in txs}, geo.port


def decision_inputs(txs: list[dict]) -> list[tuple[str, list]]:
    """What the decision service reads for these transactions: (topic, messages) chunks."""
    raw = [(tx["transaction_id"], k, v) for tx, (k, v) in zip(txs, as_messages(txs), strict=True)]
    return inputs_for("decision", raw)


def assert_decided_once_with_every_agent(stack, ids: set[str]) -> None:
    decisions = stack.decisions_for(ids, timeout_s=120)
    assert set(decisions) == ids, f"lost: {sorted(ids - set(decisions))[:5]}"
    twice = [t for t, ds in decisions.items() if len(ds) != 1]
    assert not twice, f"{len(twice)} decided more than once"
    assert all(not ds[0]["missing_agents"] for ds in decisions.values())


def test_results_read_long_before_their_requests_still_join_them(stack, run_id):
    # A decision worker catching up on a backlog reads the three small results
    # of an analysis much faster than its large request: here every result is
    # there at once and the requests, produced before them (by timestamp),
    # come in over three times the orphan timeout. None may be taken for an
    # orphan while the requests of its partition are still being read. Once
    # JOINS_AHEAD joins of a partition hold a result, that result topic is not
    # fetched on until the requests catch up.
    txs = demo_transactions(run_id, 200, seed=45)
    feed = dict(decision_inputs(txs))  # one chunk: the topic and its messages
    orphaned_before = stack.metric(ORPHANED, of="decision")
    paused_before = stack.metric(PAUSED, of="decision")
    producer = Producer({"bootstrap.servers": stack.bootstrap, "partitioner": "murmur2_random"})
    requested_ms = int(time.time() * 1000)
    for topic, messages in feed.items():
        if topic != topics.DECISION_REQUESTS:
            for _, key, value in messages:
                producer.produce(topic, value=value, key=key, timestamp=requested_ms + 50)
    producer.flush(30)
    trickle_s = 3 * ORPHAN_AFTER_MS / 1000 / len(txs)
    for _, key, value in feed[topics.DECISION_REQUESTS]:
        producer.produce(topics.DECISION_REQUESTS, value=value, key=key, timestamp=requested_ms)
        producer.flush(5)
        time.sleep(trickle_s)

    assert_decided_once_with_every_agent(stack, {tx["transaction_id"] for tx in txs})
    assert stack.metric(ORPHANED, of="decision") == orphaned_before
    assert stack.metric(PAUSED, of="decision") > paused_before


def test_joins_waiting_for_an_absent_agent_stop_growing_and_the_rest_waits_in_kafka(stack, run_id):
    # Every join waits for geo, which never answered: what the joins hold
    # (requests, velocity and profile results) stops being fetched once
    # JOINS_AHEAD joins of a partition hold it. Faust's stream buffer and one
    # poll (500 records) still come in after that, so the bound is loose here;
    # without it, every one of the n analyses would be held.
    n = 8000
    txs = demo_transactions(run_id, n, seed=47)
    geo_results = topics.results_topic("geo")
    paused_before = stack.metric(PAUSED, of="decision")
    later = []
    for topic, messages in decision_inputs(txs):
        pairs = [(key, value) for _, key, value in messages]
        if topic == geo_results:
            later += pairs
        else:
            produce(stack.bootstrap, pairs, topic)

    wait_for(lambda: stack.metric(PAUSED, of="decision") > paused_before, 60, what="a pause")
    held, still_since = -1.0, time.monotonic()
    while time.monotonic() - still_since < 5:  # until the joins held stop changing
        now = pending_in(stack, "decision")
        if now != held:
            held, still_since = now, time.monotonic()
        time.sleep(0.5)
    assert 0 < held < n / 2, f"{held:.0f} of {n} joins held"

    produce(stack.bootstrap, later, geo_results)  # geo answers: everything is read and decided
    assert_decided_once_with_every_agent(stack, {tx["transaction_id"] for tx in txs})
    wait_for(lambda: pending_in(stack, "decision") == 0, 30, what="no join left open")


def test_joins_waiting_for_an_agent_survive_a_crash_of_decision(stack, run_id):
    ids, geo_port = hold_joins_without_geo(stack, run_id, 40, seed=41)

    stack.supervisor.kill("decision")  # SIGKILL: nothing flushed, nothing committed
    stack.supervisor.start("decision", free_port(), data_dir=stack.root / "decision")
    stack.supervisor.wait_ready(timeout_s=120, names=["decision"])
    # Nothing of the joins was committed: the new process reads them all again.
    wait_for(
        lambda: pending_in(stack, "decision") == len(ids),
        timeout_s=60,
        what="the joins built again after the restart",
    )

    stack.supervisor.start("geo", geo_port, data_dir=stack.root / "geo")
    assert_decided_once_with_every_agent(stack, ids)
    wait_for(lambda: pending_in(stack, "decision") == 0, 30, what="no join left open")


def test_joins_move_with_their_partitions_when_a_second_decision_worker_joins(stack, run_id):
    ids, geo_port = hold_joins_without_geo(stack, run_id, 40, seed=43)

    second = stack.supervisor.start(
        "decision", free_port(), name="decision-2", data_dir=stack.root / "decision-2"
    )
    try:
        stack.supervisor.wait_ready(timeout_s=120, names=["decision", "decision-2"])
        # The partitions are split; each worker holds the joins of its own, built
        # again from the uncommitted messages by the one that got them.
        wait_for(
            lambda: (
                stack.metric(PENDING, of="decision-2") > 0
                and pending_in(stack, "decision", "decision-2") == len(ids)
            ),
            timeout_s=90,
            what="the joins split between two workers",
        )
        assert stack.metric(PENDING, of="decision") > 0, "the first worker kept no partition"

        stack.supervisor.start("geo", geo_port, data_dir=stack.root / "geo")
        assert_decided_once_with_every_agent(stack, ids)
    finally:
        stack.supervisor.stop(second.name)


pytestmark = pytest.mark.integration
