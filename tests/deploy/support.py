"""What the deployment artifacts are checked against: the real commands, settings and metrics."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from agents.topics import SERVICES
from apps import cli
from apps.metrics import Metrics
from apps.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]

# Settings added together with these artifacts. A variable naming one of them is an
# expected failure until the field exists, and passes from then on.
PENDING_SETTINGS = {
    "redis_url": "the Redis read model of decisions",
    "redis_ttl_s": "the Redis read model of decisions",
    "security_protocol": "Kafka TLS/SASL",
    "sasl_mechanism": "Kafka TLS/SASL",
    "sasl_username": "Kafka TLS/SASL",
    "sasl_password": "Kafka TLS/SASL",
    "ssl_cafile": "Kafka TLS/SASL",
    "ssl_certfile": "Kafka TLS/SASL",
    "ssl_keyfile": "Kafka TLS/SASL",
}
# Metrics of the Redis read model, likewise.
PENDING_METRICS = {"riskstream_redis_errors_total", "riskstream_redis_writes_total"}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}


def check_is_a_setting(variable: str) -> None:
    """RISKSTREAM_<FIELD> must name a field of apps.settings.Settings."""
    assert variable.startswith("RISKSTREAM_"), variable
    field = variable.removeprefix("RISKSTREAM_").lower()
    if field in Settings.model_fields:
        return
    if field in PENDING_SETTINGS:
        pytest.xfail(f"{variable}: no Settings.{field} yet ({PENDING_SETTINGS[field]})")
    pytest.fail(f"{variable} is not a riskstream setting (no Settings.{field})")


def settings_from_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from exactly this environment, as a process started with it would load them."""
    with monkeypatch.context() as m:
        for name in list(os.environ):
            if name.startswith("RISKSTREAM_"):
                m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        return load_settings()


class _Parsed(Exception):
    """Carries the parsed arguments out of `riskstream`'s main() before it acts on them."""


def parse_riskstream(argv: Iterable[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse argv with the real `riskstream` command line, without running the command."""
    argv = list(argv)
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        try:
            cli.main(argv)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exc:
            pytest.fail(f"`riskstream {' '.join(argv)}` is not a riskstream command (exit {exc})")
    pytest.fail(f"`riskstream {' '.join(argv)}` ran without parsing its arguments")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make setup` installs it (Debian package prometheus)")
    return path


def sample_names(family: Metric) -> set[str]:
    """The series names Prometheus scrapes for one metric family (labelled or not)."""
    name = family.name
    if family.type == "counter":
        return {f"{name}_total", f"{name}_created"}
    if family.type == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if family.type == "summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    if family.type == "info":
        return {f"{name}_info"}
    return {name}


def _redis_read_model_metrics(registry: CollectorRegistry) -> None:
    """The decision service's Redis metrics, where that module exists yet."""
    try:
        from apps.redis_store import RedisDecisions
    except ImportError:
        return
    try:
        store = RedisDecisions(
            "redis://127.0.0.1:1/0", ttl_s=60, timeout_ms=100, queue_max=10, registry=registry
        )
    except TypeError:  # a changed constructor: the names stay pending
        return
    asyncio.run(store.close())


def exposed_metric_names() -> set[str]:
    """Every series name a riskstream service exposes on /metrics.

    Each service registers the business metrics and Faust's sensor, whose names carry
    the app id (the service name) as a prefix.
    """
    registry = CollectorRegistry()
    Metrics.create(registry)
    for service in SERVICES:
        FaustMetrics.create(registry, service)
    _redis_read_model_metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names |= sample_names(family)
    return names
