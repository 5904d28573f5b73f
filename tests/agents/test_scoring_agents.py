"""The three scoring agents in test_context: real state, real results, redeliveries absorbed."""

from __future__ import annotations

import orjson
from faust.types import TP

from agents import topics
from agents.contracts import Transaction
from agents.fanout import fan_out
from agents.ordering import MARKER
from apps import geo, profile, velocity
from tables.windows import AccountWindow
from tests.agents.conftest import Harness
from tests.kafka_helpers import read_topic


def request(
    tx_id: str,
    minute: int,
    *,
    amount: float = 20.0,
    lat: float = -23.5,
    lon: float = -46.6,
    merchant: str = "m-1",
    account: str = "acct-1",
) -> bytes:
    tx = Transaction.model_validate(
        {
            "schema_version": 1,
            "transaction_id": tx_id,
            "account_id": account,
            "amount": amount,
            "currency": "USD",
            "timestamp": 1735689600 + 60 * minute,
            "merchant_id": merchant,
            "channel": "card_present",
            "location": {"lat": lat, "lon": lon},
            "billing_location": {"lat": -23.5, "lon": -46.6},
        }
    )
    return fan_out(
        tx, requested_at="2026-01-01T00:00:00Z", expected_agents=[], deadline_ms=1
    ).agent_request


async def results(settings, agent: str, until: int) -> dict[str, list[dict]]:
    """Results by transaction id (keyed by analysis_id, they come back in any order)."""
    out = await read_topic(
        settings.bootstrap_servers,
        topics.results_topic(agent),
        settings.partitions,
        until=until,
        timeout_s=10,
    )
    by_tx: dict[str, list[dict]] = {}
    for m in out:
        by_tx.setdefault(m.json["transaction_id"], []).append(m.json)
    return by_tx


async def test_profile_learns_the_account_and_flags_a_spike_after_warm_up(settings):
    app = profile.create_app(settings)
    async with Harness(app, "score_profile") as h:
        for i in range(8):
            await h.put(request(f"tx-{i}", i * 60, amount=20.0 + i), b"acct-1")
        await h.put(request("tx-spike", 600, amount=900.0), b"acct-1")
        await h.flush()
        state = orjson.loads(app.tables["account_profiles"][b"acct-1"])
    out = await results(settings, "profile", 9)
    assert state["count"] == 9
    [spike] = out["tx-spike"]
    assert {r["code"] for r in spike["reasons"]} >= {"PROFILE_AMOUNT_SPIKE"}
    assert spike["score"] >= 0.8
    # Warm-up: nothing fires on a new account.
    assert all(out[f"tx-{i}"][0]["reasons"] == [] for i in range(5))


async def test_a_batch_over_two_partitions_reads_each_account_from_its_own(settings):
    # RocksDB keeps a database per partition, and a read goes to the current
    # event's: in a batch, every event must be current while it is handled.
    settings = settings.model_copy(update={"store": "rocksdb://"})
    app = profile.create_app(settings)
    async with Harness(app, "score_profile") as h:
        await h.put(request("tx-1", 0, account="acct-1"), b"acct-1", partition=0, wait=False)
        await h.put(request("tx-2", 1, account="acct-2"), b"acct-2", partition=1, wait=False)
        await h.put(request("tx-3", 2, account="acct-1"), b"acct-1", partition=0, wait=False)
        await h.put(request("tx-4", 3, account="acct-2"), b"acct-2", partition=1)
        await h.flush()
        out = await results(settings, "profile", 4)
        stored = {a: app.tables["account_profiles"].data[a] for a in (b"acct-1", b"acct-2")}
    assert sorted(out) == ["tx-1", "tx-2", "tx-3", "tx-4"]
    assert {a: orjson.loads(v)["count"] for a, v in stored.items()} == {b"acct-1": 2, b"acct-2": 2}
    # The changelog, written below Faust's table API (agents/table_rows.py), holds
    # the same rows in the same partitions, each account once for the batch.
    changelog = await read_topic(
        settings.bootstrap_servers,
        "profile-account_profiles-changelog",
        settings.partitions,
        idle_s=1.0,
        timeout_s=10,
    )
    assert {(m.key, m.partition): m.value for m in changelog} == {
        (b"acct-1", 0): stored[b"acct-1"],
        (b"acct-2", 1): stored[b"acct-2"],
    }
    assert len(changelog) == 2


async def test_a_message_fetched_before_a_rebalance_is_skipped_not_scored(settings):
    # Faust's stream skips a message of an older consumer generation (its
    # partition may belong to another worker now); a batch does the same.
    app = profile.create_app(settings)
    async with Harness(app, "score_profile") as h:
        await h.put(request("tx-old", 0), b"acct-1", wait=False)
        app.consumer_generation_id += 1  # a rebalance came before the agent took it
        await h.put(request("tx-new", 1), b"acct-1")
        await h.flush()
        out = await read_topic(
            settings.bootstrap_servers,
            topics.results_topic("profile"),
            settings.partitions,
            idle_s=1.0,
            timeout_s=10,
        )
        state = orjson.loads(app.tables["account_profiles"][b"acct-1"])
    assert [m.json["transaction_id"] for m in out] == ["tx-new"]
    assert state["count"] == 1


async def test_a_redelivered_request_gets_the_same_result_and_changes_no_state(settings):
    app = profile.create_app(settings)
    async with Harness(app, "score_profile") as h:
        await h.put(request("tx-1", 0, amount=10.0), b"acct-1")
        await h.put(request("tx-2", 1, amount=30.0), b"acct-1")
        before = app.tables["account_profiles"][b"acct-1"]
        await h.put(request("tx-1", 0, amount=10.0), b"acct-1")  # the first one again, late
        await h.flush()
        assert app.tables["account_profiles"][b"acct-1"] == before
    first, again = (await results(settings, "profile", 3))["tx-1"]
    assert again == first


async def test_geo_flags_impossible_travel_between_two_cities(settings):
    app = geo.create_app(settings)
    async with Harness(app, "score_geo") as h:
        await h.put(request("tx-sp", 0), b"acct-1")  # São Paulo
        await h.put(request("tx-ldn", 30, lat=51.5, lon=-0.12), b"acct-1")  # London, 30 min later
        await h.flush()
        state = orjson.loads(app.tables["account_geo"][b"acct-1"])
    [london] = (await results(settings, "geo", 2))["tx-ldn"]
    assert [r["code"] for r in london["reasons"]][0] == "GEO_IMPOSSIBLE_TRAVEL"
    assert london["features"]["speed_kmh"] > 9000
    assert (state["last_lat"], state["last_lon"]) == (51.5, -0.12)


async def test_velocity_counts_the_account_then_the_merchant_and_scores_a_burst(settings):
    app = velocity.create_app(settings)
    async with Harness(app, "count_account_velocity") as h:
        for i in range(4):
            await h.put(request(f"tx-{i}", 0, merchant=f"m-{i}"), b"acct-1")
        await h.put(request("tx-0", 0, merchant="m-0"), b"acct-1")  # a copy
        await h.flush()
        state = orjson.loads(app.tables["account_velocity"][b"acct-1"])
    assert len(state["events"]) == 4
    forwards = await read_topic(
        settings.bootstrap_servers,
        topics.VELOCITY_BY_MERCHANT,
        settings.partitions,
        until=5,
        timeout_s=10,
    )
    # Keyed by merchant, they come back in any order across partitions.
    by_tx = {(m.json["request"]["transaction_id"], m.json["duplicate"]): m for m in forwards}
    assert {tx: m.key for (tx, dup), m in by_tx.items() if not dup} == {
        f"tx-{i}": f"m-{i}".encode() for i in range(4)
    }
    assert by_tx[("tx-3", False)].json["account_windows"]["1m"]["count"] == 4
    assert ("tx-0", True) in by_tx

    app2 = velocity.create_app(settings)
    async with Harness(app2, "score_velocity") as h:
        for m in forwards:
            await h.put(m.value, m.key, topic=topics.VELOCITY_BY_MERCHANT)
        await h.flush()
    out = await results(settings, "velocity", 5)
    assert {r["code"] for r in out["tx-3"][0]["reasons"]} >= {"VELOCITY_BURST_1M"}
    first, copy = out["tx-0"]
    assert copy | {"processed_at": None} == first | {"processed_at": None}


async def test_both_velocity_stages_hold_their_writes_until_written_out(settings):
    # The first batch after a quiet spell is written out at once; the next ones
    # are held (the interval is long here) until a rebalance takes partitions away.
    settings = settings.model_copy(
        update={"store": "rocksdb://", "table_write_interval_ms": 10_000}
    )

    async def changelog(table: str) -> list:
        name = f"velocity-{table}-changelog"
        return await read_topic(
            settings.bootstrap_servers, name, settings.partitions, idle_s=1.0, timeout_s=10
        )

    app = velocity.create_app(settings)
    revoked = {TP(topics.requests_topic("velocity"), 0), TP(topics.VELOCITY_BY_MERCHANT, 0)}
    async with Harness(app, "count_account_velocity") as h:
        await h.put(request("tx-1", 0), b"acct-1")
        await h.put(request("tx-2", 1), b"acct-1")
        await h.flush()
        assert [m.key for m in await changelog("account_velocity")] == [b"acct-1"]
        await app.on_partitions_revoked.send(revoked)
        written = await changelog("account_velocity")
    assert [m.key for m in written] == [b"acct-1", b"acct-1"]
    assert len(orjson.loads(written[-1].value)["events"]) == 2

    forwards = await read_topic(
        settings.bootstrap_servers, topics.VELOCITY_BY_MERCHANT, settings.partitions, until=2
    )
    app2 = velocity.create_app(settings)
    async with Harness(app2, "score_velocity") as h:
        for m in forwards:
            await h.put(m.value, m.key, partition=0, topic=topics.VELOCITY_BY_MERCHANT)
        await h.flush()
        assert len(await results(settings, "velocity", 2)) == 2  # sent with their batch
        assert len(await changelog("merchant_velocity")) == 1
        assert len(await changelog("velocity_results")) == 1
        await app2.on_partitions_revoked.send(revoked)
        assert len(await changelog("merchant_velocity")) == 2
        assert len(await changelog("velocity_results")) == 2


def invalid_internal(app) -> dict[str, float]:
    return {
        s.labels.get("topic"): s.value
        for m in app.prometheus_registry.collect()
        for s in m.samples
        if s.name == "riskstream_invalid_internal_messages_total"
    }


async def test_an_unreadable_request_is_counted_and_skipped_and_the_next_one_scored(settings):
    app = profile.create_app(settings)
    async with Harness(app, "score_profile") as h:
        await h.put(b"{broken", b"acct-1")
        await h.put(orjson.dumps({"analysis_id": "a-1"}), b"acct-1")  # no transaction
        await h.put(request("tx-1", 0), b"acct-1")
        await h.flush()
    assert list(await results(settings, "profile", 1)) == ["tx-1"]
    assert invalid_internal(app) == {topics.requests_topic("profile"): 2.0}


async def test_in_event_time_order_the_merchant_stage_scores_behind_the_watermark(settings):
    # Three transactions at one merchant arrive out of order (minute 2, 0, 1). Held
    # until a watermark passes them, they are counted in event-time order.
    ordered = settings.model_copy(update={"ordering": "event_time"})
    app = velocity.create_app(ordered)
    t0_ms = 1735689600 * 1000
    async with Harness(app, "score_velocity") as h:
        for minute in (2, 0, 1):
            req = orjson.loads(request(f"tx-{minute}", minute, account=f"acct-{minute}"))
            windows = AccountWindow(t0_ms).windows(t0_ms)  # empty: the account part is not tested
            forward = {"request": req, "account_windows": windows, "duplicate": False}
            await h.put(orjson.dumps(forward), b"m-1", topic=topics.VELOCITY_BY_MERCHANT)
        assert gauge(app, "riskstream_held_transactions") == 3.0
        marker = {MARKER: {"sender": 0, "senders": 1, "time_ms": t0_ms + 10 * 60_000}}
        await h.put(orjson.dumps(marker), b"m-1", topic=topics.VELOCITY_BY_MERCHANT)
        await h.flush()
        assert gauge(app, "riskstream_held_transactions") == 0.0
    out = await results(settings, "velocity", 3)
    counts = {tx: r[0]["features"]["merchant_count_1h"] for tx, r in out.items()}
    assert counts == {"tx-0": 1, "tx-1": 2, "tx-2": 3}


def gauge(app, name: str) -> float:
    return next(
        s.value for m in app.prometheus_registry.collect() for s in m.samples if s.name == name
    )
