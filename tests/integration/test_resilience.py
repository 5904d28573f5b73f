"""Scaling out and crashing: two workers of a service, SIGKILL with an empty data dir."""

from __future__ import annotations

import shutil
import time

import pytest
from confluent_kafka import Producer

from agents import topics
from agents.contracts import analysis_id_for, rfc3339_to_ms
from agents.output import partition_for
from apps.broker import free_port
from tables.windows import ACCOUNT_WINDOWS_MS
from tests.integration.conftest import get_json, running_stack, wait_for
from tests.integration.test_decision_joins import decision_inputs
from tests.integration.test_pipeline import as_messages, demo_transactions
from tests.kafka_helpers import produce, read_topic, run

SERVED_BY = "X-Riskstream-Served-By"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, "resilience") as s:
        yield s


def account_windows(txs: list[dict]) -> dict[str, dict]:
    """An account's velocity windows as of its last transaction, computed from the transactions."""
    times = [(rfc3339_to_ms(t["timestamp"]), t) for t in txs]
    as_of = max(ms for ms, _ in times)
    out = {}
    for name, window_ms in ACCOUNT_WINDOWS_MS.items():
        inside = [t for ms, t in times if as_of - window_ms < ms <= as_of]
        out[name] = {
            "count": len(inside),
            "sum": sum(t["amount"] for t in inside),
            "max": max(t["amount"] for t in inside),
            "distinct_merchants": len({t["merchant_id"] for t in inside}),
        }
    return out


def counts_every_one(probe: str, txs: list[dict]) -> bool:
    """Whether velocity's lookup has the windows of exactly these transactions."""
    status, body, _ = get_json(probe)
    if status != 200:
        return False
    expected = account_windows(txs)
    for name, window in body["windows"].items():
        want = expected[name]
        if (window["count"], window["max"], window["distinct_merchants"]) != (
            want["count"],
            want["max"],
            want["distinct_merchants"],
        ) or window["sum"] != pytest.approx(want["sum"], abs=0.01):
            return False
    return True


def start_decision(stack, **env: str) -> None:
    """Start the stopped decision worker again, with these variables set for it alone."""
    decision = stack.supervisor.services["decision"]
    stack.supervisor.extra_env.update(env)
    try:
        stack.supervisor.start("decision", decision.port, data_dir=decision.data_dir)
    finally:
        for name in env:
            del stack.supervisor.extra_env[name]
    stack.supervisor.wait_ready(timeout_s=120, names=["decision"])


def test_with_two_velocity_workers_either_one_answers_for_every_key(stack, run_id):
    txs = demo_transactions(run_id, 120, seed=21)
    produce(stack.bootstrap, as_messages(txs))
    stack.decisions_for({tx["transaction_id"] for tx in txs})

    second = stack.supervisor.start(
        "velocity", free_port(), name="velocity-2", data_dir=stack.root / "velocity-2"
    )
    workers = [stack.url("velocity"), second.url]
    probe = f"{second.url}/accounts/{txs[0]['account_id']}/velocity"

    # While the new worker joins and recovers, it says so: 503, Retry-After, JSON.
    unavailable = []

    def both_ready() -> bool:
        status, body, headers = get_json(probe)
        if status == 503:
            unavailable.append((body, headers))
        return all(get_json(f"{w}/ready")[0] == 200 for w in workers)

    wait_for(both_ready, timeout_s=90, interval_s=0.1, what="two ready velocity workers")
    assert unavailable, "the joining worker never answered 503 while it was not ready"
    body, headers = unavailable[0]
    assert headers["Retry-After"] and body["status"] == 503 and body["error"]
    accounts = sorted({tx["account_id"] for tx in txs})
    merchants = sorted({tx["merchant_id"] for tx in txs})
    served_by = set()
    for path in [f"/accounts/{a}/velocity" for a in accounts] + [
        f"/merchants/{m}/velocity" for m in merchants
    ]:
        answers = []
        for w in workers:
            status, body, headers = wait_for(
                lambda w=w, path=path: (r := get_json(w + path)) and r[0] != 503 and r,
                30,
                what=path,
            )
            assert status == 200, (w, path, status, body)
            answers.append(body)
            served_by.add(headers[SERVED_BY])
        assert answers[0] == answers[1], path
    # Both workers own some of the keys: half of the answers were routed.
    assert len(served_by) == 2, served_by
    counted = sum(
        get_json(f"{workers[1]}/accounts/{a}/velocity")[1]["windows"]["24h"]["count"]
        for a in accounts
    )
    assert counted == len(txs)
    stack.supervisor.stop("velocity-2")
    wait_for(lambda: get_json(f"{workers[0]}/ready")[0] == 200, 60, what="velocity alone again")


@pytest.mark.parametrize("service", ["profile", "decision"])
def test_a_service_killed_and_restarted_with_an_empty_data_dir_rebuilds_its_tables(
    stack, run_id, service
):
    txs = demo_transactions(run_id, 60, seed=31)
    produce(stack.bootstrap, as_messages(txs[:40]))
    decided = stack.decisions_for({tx["transaction_id"] for tx in txs[:40]})
    account = txs[39]["account_id"]
    probe = {
        "profile": f"/accounts/{account}/profile",
        "decision": f"/transactions/{txs[39]['transaction_id']}/decision",
    }[service]
    before = get_json(stack.url(service) + probe)
    assert before[0] == 200

    sp = stack.supervisor.services[service]
    stack.supervisor.kill(service)  # SIGKILL: no shutdown, no flush
    shutil.rmtree(sp.data_dir / service, ignore_errors=True)
    produce(stack.bootstrap, as_messages(txs[40:]))  # traffic while it is down
    restarted = stack.supervisor.start(service, sp.port, data_dir=sp.data_dir)
    stack.supervisor.wait_ready(timeout_s=120, names=[service])
    assert restarted.pid != sp.pid

    after = wait_for(
        lambda: (r := get_json(stack.url(service) + probe)) and r[0] == 200 and r, 30, what=probe
    )
    if service == "profile":
        # Rebuilt from the changelog, then the later transactions were added on top.
        later = sum(t["account_id"] == account for t in txs[40:])
        assert after[1]["count"] == before[1]["count"] + later
        assert after[1]["first_seen"] == before[1]["first_seen"]
    else:
        assert after[1] == before[1]  # the same decision, not a new one

    ids = {tx["transaction_id"] for tx in txs}
    found = stack.decisions_for(ids)
    assert set(found) == ids, f"lost decisions: {sorted(ids - set(found))[:5]}"
    for tx_id in decided:
        # Decisions made before the crash are not made again differently.
        assert {d["outcome"] for d in found[tx_id]} == {decided[tx_id][0]["outcome"]}


def test_velocity_killed_with_its_writes_held_counts_every_transaction_once(stack, run_id):
    velocity = stack.supervisor.services["velocity"]
    try:
        held_writes_lost_and_made_again(stack, run_id, velocity)
    finally:
        if not stack.supervisor.services["velocity"].alive():  # as the other tests expect it
            stack.supervisor.start("velocity", velocity.port, data_dir=velocity.data_dir)
            stack.supervisor.wait_ready(timeout_s=120, names=["velocity"])


def held_writes_lost_and_made_again(stack, run_id: str, velocity) -> None:
    # Held up to 10 s here: after the first transaction (written out at once,
    # the first after a quiet spell), the others' rows are held when velocity is killed.
    stack.supervisor.stop("velocity")
    stack.supervisor.extra_env["RISKSTREAM_TABLE_WRITE_INTERVAL_MS"] = "10000"
    try:
        holding = stack.supervisor.start("velocity", velocity.port, data_dir=velocity.data_dir)
    finally:
        del stack.supervisor.extra_env["RISKSTREAM_TABLE_WRITE_INTERVAL_MS"]
    stack.supervisor.wait_ready(timeout_s=120, names=["velocity"])
    txs = demo_transactions(run_id, 60, seed=37)
    account = txs[-1]["account_id"]
    mine = [t for t in txs if t["account_id"] == account]
    primer = next(t for t in txs if t["account_id"] != account)
    produce(stack.bootstrap, as_messages([primer]))
    stack.decisions_for({primer["transaction_id"]})
    rest = [t for t in txs if t is not primer]
    produce(stack.bootstrap, as_messages(rest))
    stack.decisions_for({t["transaction_id"] for t in rest})
    changelog = run(
        read_topic(
            stack.bootstrap,
            "velocity-account_velocity-changelog",
            stack.settings.partitions,
            idle_s=1.0,
        )
    )
    assert account.encode() not in {m.key for m in changelog}  # held
    probe = stack.url("velocity") + f"/accounts/{account}/velocity"
    wait_for(lambda: counts_every_one(probe, mine), 30, what="velocity lookup")  # read held

    stack.supervisor.kill("velocity")  # SIGKILL: the held writes are lost with it
    shutil.rmtree(velocity.data_dir / "velocity", ignore_errors=True)
    restarted = stack.supervisor.start("velocity", velocity.port, data_dir=velocity.data_dir)
    stack.supervisor.wait_ready(timeout_s=120, names=["velocity"])
    assert restarted.pid != holding.pid
    # Rebuilt from the changelog, and the requests whose writes were held read
    # and counted again, once.
    wait_for(lambda: counts_every_one(probe, mine), 60, what="velocity lookup")


def test_after_an_outage_of_decision_no_answer_made_in_time_is_named_missing(stack, run_id):
    # While the decision service is down, requests and the agents' answers
    # come in well within the deadline, but geo's answers queue behind 20,000
    # late copies of earlier answers. Started again, the service reads the
    # deadline ticks long before geo's answers: those analyses wait until
    # geo's results partitions have been read up to their deadline. Only the
    # analyses geo never answered are decided without it, once those partitions
    # are read to the end, where an unreadable message is last.
    earlier = demo_transactions(f"{run_id}-a", 200, seed=37)
    produce(stack.bootstrap, as_messages(earlier))
    assert set(stack.decisions_for({tx["transaction_id"] for tx in earlier})) == {
        tx["transaction_id"] for tx in earlier
    }
    geo_results = topics.results_topic("geo")
    late_copies = [
        (key, value)
        for topic, messages in decision_inputs(earlier)
        if topic == geo_results
        for _, key, value in messages
    ] * 100
    txs = demo_transactions(run_id, 500, seed=38)
    unanswered = {tx["transaction_id"] for tx in txs[::10]}
    stack.supervisor.stop("decision")
    produce(stack.bootstrap, late_copies, geo_results)
    for topic, messages in decision_inputs(txs):
        produce(
            stack.bootstrap,
            [(k, v) for tx_id, k, v in messages if topic != geo_results or tx_id not in unanswered],
            topic,
        )
    partitions = stack.settings.partitions
    keys = {partition_for(f"broken-{i}".encode(), partitions): f"broken-{i}" for i in range(64)}
    assert len(keys) == partitions  # one for each partition
    produce(stack.bootstrap, [(key.encode(), b"{broken") for key in keys.values()], geo_results)
    time.sleep(stack.settings.deadline_ms / 1000 + 0.5)  # every deadline has passed

    # One message a batch: the backlog takes seconds to read, the ticks come sooner.
    start_decision(stack, RISKSTREAM_BATCH_MAX_EVENTS="1")
    ids = {tx["transaction_id"] for tx in txs}
    found = stack.decisions_for(ids, timeout_s=120)
    assert set(found) == ids, f"lost decisions: {sorted(ids - set(found))[:5]}"
    assert all(len(ds) == 1 for ds in found.values())
    named = {t: ds[0]["missing_agents"] for t, ds in found.items() if ds[0]["missing_agents"]}
    assert set(named) == unanswered, f"{len(set(named) - unanswered)} answered named missing"
    assert all(agents == ["geo"] for agents in named.values())
    # The backlog did put deadline decisions off (else this test shows nothing),
    # and a deadline that could only wait sent no tick.
    assert stack.metric("riskstream_deadline_waits_total", of="decision") > 0
    analyses = {analysis_id_for(tx_id) for tx_id in ids}
    ticks = [
        m
        for m in stack.read(topics.DECISION_DEADLINES, idle_s=1.0)
        if m.json["analysis_id"] in analyses
    ]
    assert len(ticks) < len(ids) / 2, f"{len(ticks)} deadline ticks for {len(ids)} analyses"

    stack.supervisor.stop("decision")  # back to the module's settings
    start_decision(stack)


def test_an_answer_made_in_time_that_reaches_kafka_within_the_grace_is_not_named_missing(
    stack, run_id
):
    # An answer is stamped by the agent's producer before it is in Kafka: at
    # full speed some were stamped up to 47 ms before their deadline and
    # stored after the deadline had found the partition read to its end. Here
    # geo's answers, stamped half a second before the deadline, are stored a
    # second after it, within the grace (4 s for this test). A tenth never
    # comes: those analyses are decided without geo once the grace is over.
    stack.supervisor.stop("decision")
    start_decision(stack, RISKSTREAM_DEADLINE_GRACE_MS="4000")

    txs = demo_transactions(run_id, 50, seed=40)
    requested_ms = int(time.time() * 1000)
    inputs = decision_inputs(txs)  # requested now, with a deadline of 2 s
    unanswered = {tx["transaction_id"] for tx in txs[::10]}
    geo_results = topics.results_topic("geo")
    producer = Producer({"bootstrap.servers": stack.bootstrap, "partitioner": "murmur2_random"})
    geo_answers = []
    for topic, messages in inputs:
        for tx_id, key, value in messages:
            if topic != geo_results:
                producer.produce(topic, value=value, key=key)
            elif tx_id not in unanswered:
                geo_answers.append((key, value))
    assert producer.flush(30) == 0
    time.sleep(max(0.0, (requested_ms + 3000) / 1000 - time.time()))  # the deadline, and 1 s
    for key, value in geo_answers:
        producer.produce(geo_results, value=value, key=key, timestamp=requested_ms + 1500)
    assert producer.flush(30) == 0

    ids = {tx["transaction_id"] for tx in txs}
    found = stack.decisions_for(ids, timeout_s=60)
    assert set(found) == ids
    assert all(len(ds) == 1 for ds in found.values())
    named = {t: ds[0]["missing_agents"] for t, ds in found.items() if ds[0]["missing_agents"]}
    assert set(named) == unanswered, f"{len(set(named) - unanswered)} answered named missing"
    assert all(agents == ["geo"] for agents in named.values())

    stack.supervisor.stop("decision")  # back to the module's settings
    start_decision(stack)


def test_with_an_agent_down_the_deadline_decides_without_it(stack, run_id):
    # Live, nothing of geo's is left unread: each deadline decides once the
    # grace (RISKSTREAM_DEADLINE_GRACE_MS) is over.
    geo = stack.supervisor.services["geo"]
    stack.supervisor.stop("geo")
    try:
        txs = demo_transactions(run_id, 30, seed=39)
        produced_at = time.monotonic()
        produce(stack.bootstrap, as_messages(txs))
        found = stack.decisions_for({tx["transaction_id"] for tx in txs}, timeout_s=60)
        took_s = time.monotonic() - produced_at
    finally:
        stack.supervisor.start("geo", geo.port, data_dir=geo.data_dir)
        stack.supervisor.wait_ready(timeout_s=120, names=["geo"])
    assert len(found) == len(txs)
    assert all(len(ds) == 1 and ds[0]["missing_agents"] == ["geo"] for ds in found.values())
    assert took_s < 30, f"decided {took_s:.0f} s after the transactions"
