"""The Redis read model against a real redis-server, including an outage mid-stream."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request

import pytest
import redis

from agents.contracts import analysis_id_for
from apps.broker import free_port, wait_for_port
from tests.integration.conftest import get_json, running_stack, wait_for
from tests.integration.test_pipeline import as_messages, demo_transactions
from tests.kafka_helpers import produce

REDIS_SERVER = shutil.which("redis-server") or "redis-server (missing: `make test` installs it)"


class RedisServer:
    def __init__(self, port: int, workdir):
        self.port, self.workdir, self.process = port, workdir, None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for_port("127.0.0.1", self.port, 10), "redis-server did not start"
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server):
    env = {
        "RISKSTREAM_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "RISKSTREAM_REDIS_TTL_S": "3600",
    }
    with running_stack(tmp_path_factory, "redis", env) as s:
        yield s


def test_every_decision_is_written_to_redis_and_read_from_there_first(stack, redis_server, run_id):
    txs = demo_transactions(run_id, 20, seed=41)
    produce(stack.bootstrap, as_messages(txs))
    found = stack.decisions_for({t["transaction_id"] for t in txs})
    r = redis_server.client()

    def all_in_redis() -> bool:
        return all(r.exists(f"riskstream:decision:{analysis_id_for(t)}") for t in found)

    wait_for(all_in_redis, 20, what="decisions in redis")
    for tx_id, [d] in found.items():
        aid = analysis_id_for(tx_id)
        assert r.get(f"riskstream:transaction:{tx_id}").decode() == aid
        assert 0 < r.ttl(f"riskstream:decision:{aid}") <= 3600
        status, body, headers = get_json(f"{stack.url('decision')}/transactions/{tx_id}/decision")
        assert status == 200 and body == d
        assert headers.get("X-Riskstream-Source") == "redis"


def test_a_redis_outage_never_stops_decisions_and_the_backlog_is_written_after(
    stack, redis_server, run_id
):
    redis_server.kill()
    txs = demo_transactions(run_id, 30, seed=43)
    produce(stack.bootstrap, as_messages(txs))
    ids = {t["transaction_id"] for t in txs}
    found = stack.decisions_for(ids)
    assert set(found) == ids and all(len(ds) == 1 for ds in found.values())

    # Lookups fall back to the table while Redis is away.
    some = next(iter(ids))
    status, body, headers = get_json(f"{stack.url('decision')}/transactions/{some}/decision")
    assert status == 200 and body == found[some][0]
    assert "X-Riskstream-Source" not in headers
    assert stack.metric("riskstream_redis_errors_total", "decision", operation="write") > 0

    redis_server.start()  # back, empty, on the same port
    r = redis_server.client()
    wait_for(
        lambda: all(r.exists(f"riskstream:decision:{analysis_id_for(t)}") for t in ids),
        30,
        what="the queued decisions to reach redis",
    )
    assert stack.metric("riskstream_redis_queue", "decision") == 0


def test_every_metric_the_dashboard_and_alerts_use_is_served_by_a_running_service(stack, run_id):
    from tests.deploy.support import PROMETHEUS_SERIES
    from tests.deploy.test_monitoring import every_used_metric

    produce(stack.bootstrap, as_messages(demo_transactions(run_id, 10, seed=45)) + [(None, b"[]")])
    stack.decisions_for(set(), timeout_s=5)
    served: set[str] = set()
    for service in ("orchestrator", "velocity", "profile", "geo", "decision"):
        text = urllib.request.urlopen(f"{stack.url(service)}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                served.add(name)
                if kind == "histogram":
                    served |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
                if kind == "counter" and not name.endswith("_total"):
                    served.add(f"{name}_total")
            elif line and not line.startswith("#"):
                served.add(line.split("{")[0].split(" ")[0])
    served |= PROMETHEUS_SERIES
    missing = []
    for where, kind, name in every_used_metric():
        if kind == "regex":
            if not any(re.fullmatch(name, m) for m in served):
                missing.append((where, name))
        elif name not in served:
            missing.append((where, name))
    assert not missing, missing
