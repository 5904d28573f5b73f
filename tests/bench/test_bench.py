"""`riskstream bench --quick` end to end: the embedded broker, the five services and the
baselines as processes, a JSON report with every figure, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from apps.bench import (
    add_parser,
    batch_sizes,
    machine_load,
    machine_stolen_s,
    make_plan,
    merge_stacks,
    pid_alive,
    plot_latency,
)

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("orchestrator", "velocity", "profile", "geo", "decision")
RUN_BENCH = "import sys; from apps.bench import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_BENCH, "--quick", "--json", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        # SIGTERM makes the bench stop what it started before it exits.
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"bench --quick did not finish in 240 s:\n{output.decode(errors='replace')}")
    assert proc.returncode == 0, output.decode(errors="replace")
    return json.loads(out.read_text())


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_quick_bench_measures_the_pipeline_end_to_end(quick_report):
    (run,) = quick_report["runs"]
    assert run["decided"] == run["produced"] > 0
    assert run["throughput_tps"] > 0
    lat = run["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    # Checked against the agents' answers: none named missing had answered in time.
    assert run["missing_answered_in_time"] == 0 <= run["missing_agents"]
    assert quick_report["pipeline_throughput_tps"] == run["throughput_tps"]
    # Every step of every transaction's way was timed, and no step is longer than the whole.
    hops = run["hops_ms"]
    whole = hops["transaction to decision"]
    assert whole["count"] == run["decided"]
    for name, step in hops.items():
        assert step["count"] > 0, name
        assert step["p50"] <= whole["max"], name


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_quick_bench_measures_every_service_and_the_broker(quick_report):
    (run,) = quick_report["runs"]
    for name in (*SERVICES, "broker"):
        assert run["cpu_s"][name] > 0, name
        assert run["rss_peak_mb"][name] > 0, name
        assert quick_report["rss_peak_mb"][name] > 0, name
    # Each service's batches in the run, read from its own metrics.
    for name in SERVICES:
        sizes = run["batches"][name]
        assert sizes["messages"] >= sizes["batches"] > 0, name
        assert sizes["per_batch"] == sizes["messages"] / sizes["batches"], name
    # The orchestrator reads every transaction of the run at least once.
    assert run["batches"]["orchestrator"]["messages"] >= run["produced"]
    assert 0 <= run["machine"]["stolen_cores"] <= quick_report["machine"]["nproc"]


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_quick_bench_measures_both_baselines_and_the_ratios(quick_report):
    for name in ("faust_naive", "aiokafka_relay"):
        baseline = quick_report["baselines"][name]
        assert baseline["events_per_s"] > 0, name
        assert baseline["latency_ms"]["p50"] <= baseline["latency_ms"]["p99"], name
        assert quick_report["ratios"][f"pipeline_vs_{name}"] > 0, name


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_quick_bench_describes_the_machine_and_states_every_target(quick_report):
    machine = quick_report["machine"]
    assert machine["nproc"] >= 1 and machine["memory_mb"] > 0 and machine["python"]
    assert quick_report["settings"]["quick"] is True
    assert len(quick_report["targets"]) == 3


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_quick_bench_leaves_no_process_behind(quick_report):
    started = quick_report["processes"]
    assert set(started) >= {*SERVICES, "broker", "faust_naive", "aiokafka_relay"}
    assert [name for name, pid in started.items() if pid_alive(pid)] == []


def test_batch_sizes_are_what_each_service_handled_between_two_readings():
    before = {"profile": (10.0, 100.0), "geo": (3.0, 9.0)}
    after = {"profile": (14.0, 180.0), "geo": (3.0, 9.0), "decision": (2.0, 8.0)}
    assert batch_sizes(before, after) == {
        "profile": {"batches": 4.0, "messages": 80.0, "per_batch": 20.0},
        "geo": {"batches": 0.0, "messages": 0.0, "per_batch": None},
        # started after the first reading: everything it handled is in the window
        "decision": {"batches": 2.0, "messages": 8.0, "per_batch": 4.0},
    }


def test_the_machine_load_reports_steal_in_cores_when_it_was_read():
    ours = {"broker": 1.0, "profile": 2.0}
    load = machine_load(100.0, 108.0, ours, 4.0, stolen_s=0.4)
    assert load == {"busy_cores": 2.0, "other_processes_cores": 1.25, "stolen_cores": 0.1}
    assert "stolen_cores" not in machine_load(100.0, 108.0, ours, 4.0)
    first = machine_stolen_s()
    assert 0 <= first <= machine_stolen_s()


def test_the_bench_subcommand_parses_its_options():
    import argparse

    parser = argparse.ArgumentParser(prog="riskstream")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "-n", "50", "--rate", "100", "--rate", "0", "--no-baselines"]
    )
    plan = make_plan(args)
    assert (plan.transactions, plan.rates, plan.baselines) == (50, [100.0, 0.0], False)
    quick = make_plan(parser.parse_args(["bench", "--quick"]))
    assert quick.quick and len(quick.rates) == 1 and quick.transactions < 1000


def test_runs_on_a_stack_each_are_reported_together_and_each_stacks_figures_kept():
    def stack(rate, rss, messages, idle):
        return {
            "runs": [{"offered_rate": rate, "decided": 5}],
            "baselines": {"aiokafka_relay": {"events_per_s": 9.0}} if rate == 0 else {},
            "warmup": {"decided": 2},
            "idle": {"cpu_s": idle},
            "idle_after": {"cpu_s": idle + 1},
            "accounts_in_state": 7 if rate else 9,
            "rss_peak_mb": rss,
            "transactions_produced": 12,
            "topic_messages": messages,
        }

    first = stack(100.0, {"broker": 90.0, "geo": 50.0}, {"transactions": 12}, idle=1)
    last = stack(0.0, {"broker": 80.0, "geo": None}, {"transactions": 12, "decision.results": 5}, 3)
    merged = merge_stacks([first, last])
    assert merged["runs"] == [
        {"offered_rate": 100.0, "decided": 5, "stack": 0},
        {"offered_rate": 0.0, "decided": 5, "stack": 1},
    ]
    assert merged["baselines"] == last["baselines"]
    assert merged["idle"] == first["idle"] and merged["idle_after"] == last["idle_after"]
    # the largest of any stack, where a stack read it
    assert merged["rss_peak_mb"] == {"broker": 90.0, "geo": 50.0}
    assert merged["accounts_in_state"] == 9
    assert merged["transactions_produced"] == 24
    assert merged["topic_messages"] == {"transactions": 24, "decision.results": 5}
    assert [s["idle"] for s in merged["stacks"]] == [{"cpu_s": 1}, {"cpu_s": 3}]
    assert "runs" not in merged["stacks"][0]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_with_a_fresh_stack_each_rate_runs_on_its_own_broker_and_services(tmp_path):
    out = tmp_path / "fresh.json"
    printed = run_bench(
        "--quick", "-n", "60", "--warmup", "10", "--rate", "50", "--rate", "0",
        "--fresh-stack", "--no-baselines", json_path=out, timeout=280,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert "stack 2/2" in printed
    assert report["settings"]["fresh_stack_per_rate"] is True
    assert [(r["offered_rate"], r["stack"]) for r in report["runs"]] == [(50.0, 0), (0.0, 1)]
    for run in report["runs"]:
        assert run["decided"] == run["produced"] == 60
        assert run["hops_ms"]["transaction to decision"]["count"] == 60
    # Each stack's broker held only its own stack's transactions: warm-up and run.
    stacks = report["stacks"]
    assert [s["topic_messages"]["transactions"] for s in stacks] == [70, 70]
    assert report["transactions_produced"] == 140
    started = report["processes"]
    for rate in ("@50/s", "@max"):
        assert {f"{name}{rate}" for name in (*SERVICES, "broker")} <= set(started), rate
    assert started["broker@50/s"] != started["broker@max"]
    assert [name for name, pid in started.items() if pid_alive(pid)] == []


def test_the_latency_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")

    def run(rate, produce_rate, p50, p99):
        return {
            "offered_rate": rate,
            "produce_rate": produce_rate,
            "throughput_tps": 100.0,
            "latency_ms": {"p50": p50, "p99": p99},
        }

    report = {
        "machine": {"nproc": 2},
        "runs": [run(50, 50, 20, 60), run(100, 100, 40, 300), run(0, 5000, 9000, 20000)],
    }
    plot_latency(report, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def state_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench-state") / "state.json"
    run_bench("--state-size", "200", json_path=out, timeout=400)
    return json.loads(out.read_text())


def run_bench(*args: str, json_path: Path, timeout: float) -> str:
    """Runs ``riskstream bench`` with ``args``, writing JSON to ``json_path``; its output."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN_BENCH, *args, "--json", str(json_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.integration
@pytest.mark.timeout(500)
def test_the_state_size_bench_fills_each_service_alone_and_stops_it(state_report):
    assert state_report["state_size"] == 200
    assert list(state_report["services"]) == list(SERVICES)
    for name, r in state_report["services"].items():
        # Every input was answered: the service's output topic holds one message per account.
        assert r["outputs"] == 200, name
        assert r["peak_rss_mb"] >= r["rss_when_ready_mb"] > 0, name
        assert r["data_dir_mb"] > 0, name  # its RocksDB tables were written
        assert not pid_alive(r["pids"]["service"]) and not pid_alive(r["pids"]["broker"]), name
    assert state_report["target"]["met"] is False  # 200 accounts cannot meet a 100,000 target


def test_the_decision_is_fed_its_request_and_one_result_of_every_agent():
    from agents import topics
    from apps.bench import DataSource
    from apps.bench_state import inputs_for

    raw = DataSource(accounts=10, seed=1).batch("t-", 5)
    fed: dict[str, list] = {}
    for topic, messages in inputs_for("decision", raw):
        fed.setdefault(topic, []).extend(messages)
    assert set(fed) == {
        topics.DECISION_REQUESTS,
        *(topics.results_topic(a) for a in ("velocity", "profile", "geo")),
    }
    requests = [json.loads(v) for _, _, v in fed[topics.DECISION_REQUESTS]]
    for agent in ("velocity", "profile", "geo"):
        results = fed[topics.results_topic(agent)]
        # Keyed by analysis_id, like the request they join with.
        assert [k for _, k, _ in results] == [r["analysis_id"].encode() for r in requests]
        assert {json.loads(v)["agent"] for _, _, v in results} == {agent}
    ((topic, agent_requests),) = inputs_for("geo", raw)
    assert topic == topics.requests_topic("geo")
    assert [k for _, k, _ in agent_requests] == [k for _, k, _ in raw]  # keyed by account


def test_the_merchant_windows_bench_reports_each_size_and_way(tmp_path):
    out = tmp_path / "windows.json"
    printed = run_bench("--merchant-windows", json_path=out, timeout=120)
    assert "one transaction at a merchant" in printed
    assert "one transaction at an account" in printed
    report = json.loads(out.read_text())
    merchants, accounts = report["merchant_windows"], report["account_windows"]
    assert [r["events"] for r in merchants] == [100, 1_000, 5_000, 20_000]
    assert [r["events"] for r in accounts] == [100, 500, 2_000]
    ways = ("kept, in order", "kept, late", "from rows, in order", "from rows, late")
    for row in merchants + accounts:
        assert all(row[w]["cpu_us"] > 0 and row[w]["bytes"] > 0 for w in ways)
    # A transaction rewrites one hour or two of a busy key, not its day.
    for busiest in (merchants[-1], accounts[-1]):
        assert busiest["kept, in order"]["bytes"] * 10 < busiest["stored_bytes"]


def test_the_broker_costs_bench_reports_fetches_produce_requests_and_one_hop(tmp_path):
    out = tmp_path / "broker.json"
    printed = run_bench("--broker-costs", "--quick", json_path=out, timeout=180)
    assert "the embedded broker, idle" in printed
    assert "one hop" in printed
    report = json.loads(out.read_text())
    idle = {row["fetch_wait_ms"]: row for row in report["idle_fetches"]}
    assert sorted(idle) == [5, 20, 200]
    for wait_ms, row in idle.items():
        assert row["fetches_per_s"] > 0 and row["broker_ms_per_fetch"] > 0
        # An idle fetch is answered when its wait runs out, not before.
        assert row["fetches_per_s"] <= row["consumers"] * 1000 / wait_ms * 1.5
    assert [r["messages_per_request"] for r in report["produce"]] == [1, 10, 50]
    assert all(r["broker_ms_per_request"] > 0 for r in report["produce"])
    for hop in report["one_hop"]:
        assert hop["messages"] > 0 and 0 < hop["p50_ms"] <= hop["p99_ms"]


def test_the_batch_costs_bench_measures_the_service_and_the_baselines_alone_at_each_rate(
    tmp_path,
):
    out = tmp_path / "batches.json"
    printed = run_bench(
        "--batch-costs", "--quick", "--state-service", "profile", json_path=out, timeout=300
    )
    assert "profile alone" in printed and "baseline aiokafka_relay alone" in printed
    report = json.loads(out.read_text())
    wake = report["machine"]["event_loop_wake"]
    assert wake["cpu_us_per_wake"] > 0 and wake["cpu_us_per_busy_turn"] > 0
    result = report["services"]["profile"]
    idle, *fed = result["rates"]
    assert [idle["rate"]] + [row["rate"] for row in fed] == [0.0, 100.0, 1000.0]
    assert idle["messages"] == 0 and idle["batches_per_s"] == 0
    assert idle["cores"] > 0  # polling costs something even idle
    for row in fed:
        # Every message offered in the window was handled, in batches, before it ended.
        assert row["messages"] == row["rate"] * report["window_s"]
        assert row["batches_per_s"] > 0 and row["messages_per_batch"] >= 1
        assert row["ms_per_batch"] >= row["ms_per_message"] > 0 and row["broker_cores"] > 0
    assert not pid_alive(result["pids"]["service"]) and not pid_alive(result["pids"]["broker"])
    assert set(report["baselines"]) == {"aiokafka_relay", "faust_naive_compat"}
    relay = report["baselines"]["aiokafka_relay"]["rates"]
    for name, baseline in report["baselines"].items():
        assert [row["rate"] for row in baseline["rates"]] == [0.0, 100.0, 1000.0]
        for row in baseline["rates"][1:]:
            # Each relayed all it was offered, and its CPU is a multiple of the relay's.
            assert row["messages"] == row["rate"] * report["window_s"], name
            assert row["ms_per_message"] > 0 and row["batches_per_s"] is None
        assert all(p and not pid_alive(p) for p in baseline["pids"].values()), name
    for row, floor in zip(result["rates"], relay, strict=True):
        assert row["x_relay"] == round(row["cores"] / floor["cores"], 2)
    assert all(row["x_relay"] == 1.0 for row in relay)


def test_the_relay_chain_passes_every_event_through_four_relays_and_stops_them(tmp_path):
    out = tmp_path / "chain.json"
    printed = run_bench("--relay-chain", "--quick", "--rate", "100", json_path=out, timeout=240)
    assert "4 raw relays in a chain" in printed
    report = json.loads(out.read_text())
    assert report["hops"] == 4 and report["fetch_max_wait_ms"] > 0
    (run,) = report["runs"]
    assert run["rate"] == 100 and run["transactions"] == 500 and run["lost"] == 0
    lat = run["latency_ms"]
    assert lat["count"] == 500 and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    # Four hops each wait for a fetch: no event crosses them in less than a millisecond.
    assert lat["p50"] > 1.0
    assert run["relays_cores"] > 0 and run["broker_cores"] > 0 and run["per_s"] > 0
    assert len(report["pids"]) == 5
    assert not any(pid_alive(pid) for pid in report["pids"].values())


def test_the_profile_work_without_faust_answers_as_the_service_does(tmp_path):
    out = tmp_path / "without.json"
    printed = run_bench("--without-faust", "--quick", json_path=out, timeout=300)
    assert "as fast as possible" in printed
    report = json.loads(out.read_text())
    n = report["requests"]
    assert n == 2000
    assert list(report["runs"]) == ["profile_service", "profile_without_faust", "raw_relay"]
    for name, run in report["runs"].items():
        assert run["outputs"] == n, name
        assert run["per_s"] > 0 and run["cpu_ms_per_request"] > 0, name
        assert run["broker_cpu_ms_per_request"] > 0, name
    # The same scores, reasons and features for every request, with Faust and without.
    assert report["answers_compared"] == n and report["answers_differing"] == []
    pids = [pid for by_name in report["pids"].values() for pid in by_name.values()]
    assert len(pids) == 6 and not any(pid_alive(pid) for pid in pids)


def test_answers_differ_where_a_field_differs_or_only_one_side_answered():
    from apps.bench_without_faust import differing

    same = {"score": 0.1, "reasons": [], "features": {"n": 1}}
    with_faust = {"t1": same, "t2": same, "t3": same}
    without = {"t1": same, "t2": {**same, "score": 0.2}, "t4": same}
    assert differing(with_faust, without) == ["t2", "t3", "t4"]
    assert differing(with_faust, dict(with_faust)) == []


def test_a_relay_chain_of_no_relays_is_refused_before_anything_starts():
    proc = subprocess.run(
        [sys.executable, "-c", RUN_BENCH, "--relay-chain", "--chain-hops", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--chain-hops must be at least 1" in proc.stderr


def test_the_decision_alone_gets_each_request_followed_by_its_three_results():
    from agents import topics
    from apps.bench_batches import interleaved

    messages = interleaved("decision", 10, seed=1)
    assert len(messages) == 10
    order = [
        topics.DECISION_REQUESTS,
        *(topics.results_topic(a) for a in ("velocity", "profile", "geo")),
    ]
    assert [topic for topic, _, _ in messages] == (order * 3)[:10]
    for i in range(0, 8, 4):  # one analysis: one key, the analysis id
        assert len({key for _, key, _ in messages[i : i + 4]}) == 1
    assert {topic for topic, _, _ in interleaved("geo", 5, seed=1)} == {
        topics.requests_topic("geo")
    }
