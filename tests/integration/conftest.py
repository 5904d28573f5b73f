"""Integration tier: the embedded broker and the services as real processes.

Every process is started on free ports and stopped by its pid at teardown.
Tests produce with an independent client (librdkafka) and read topics back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents import topics
from apps.broker import EmbeddedBroker, free_port
from apps.kafka import create_topics
from apps.settings import Settings
from apps.supervisor import Supervisor, http_status
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 4


@dataclass
class Stack:
    broker: EmbeddedBroker
    settings: Settings
    supervisor: Supervisor
    root: Path

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def url(self, name: str) -> str:
        return self.supervisor.services[name].url

    def start_all(self) -> None:
        for service in topics.SERVICES:
            self.supervisor.start(service, free_port(), data_dir=self.root / service)
        self.supervisor.wait_ready(timeout_s=120)

    def read(self, topic: str, **kw) -> list:
        return asyncio.run(read_topic(self.bootstrap, topic, self.settings.partitions, **kw))

    def decisions_for(self, tx_ids: set[str], timeout_s: float = 90.0) -> dict[str, list[dict]]:
        """Every decision message for these transactions, once each has at least one."""
        deadline = time.monotonic() + timeout_s
        while True:
            found: dict[str, list[dict]] = {}
            for m in self.read(topics.DECISIONS, idle_s=1.0, timeout_s=30):
                d = m.json
                if d["transaction_id"] in tx_ids:
                    found.setdefault(d["transaction_id"], []).append(d)
            if set(found) >= tx_ids or time.monotonic() > deadline:
                return found
            time.sleep(1.0)

    def metric(self, name: str, of: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"{self.url(of)}/metrics", timeout=5).read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series = f"{name}{{{want}}}" if want else name
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0


def get_json(url: str) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)
    except (urllib.error.URLError, OSError):
        return 0, {}, {}  # not listening (yet)


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def make_stack(
    tmp_path_factory,
    name: str,
    extra_env: dict[str, str] | None = None,
    partitions: int = PARTITIONS,
) -> Stack:
    root = tmp_path_factory.mktemp(name)
    broker = EmbeddedBroker(port=free_port(), log_path=root / "broker.log").start()
    settings = Settings(broker=broker.url, partitions=partitions, data_dir=root)
    asyncio.run(create_topics(settings))
    supervisor = Supervisor(settings, root / "logs", extra_env=dict(extra_env or {}))
    return Stack(broker, settings, supervisor, root)


@contextlib.contextmanager
def running_stack(
    tmp_path_factory,
    name: str,
    extra_env: dict[str, str] | None = None,
    partitions: int = PARTITIONS,
):
    """A broker and the five services, all stopped by pid on the way out."""
    s = make_stack(tmp_path_factory, name, extra_env, partitions)
    try:
        s.start_all()
        yield s
    finally:
        s.supervisor.stop_all()
        s.broker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory, "stack") as s:
        yield s


@pytest.fixture
def run_id() -> str:
    """A prefix that keeps one test's ids apart from another's on a shared stack."""
    return uuid.uuid4().hex[:8]


__all__ = ["Stack", "get_json", "http_status", "make_stack", "wait_for"]
