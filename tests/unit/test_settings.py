"""Configuration errors name the variable."""

from __future__ import annotations

import pytest

from apps.settings import Settings, SettingsError, load_settings


def test_defaults_follow_the_contract(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("RISKSTREAM_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert s.broker == "kafka://127.0.0.1:9092"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.port_for("decision") == 6070


def test_environment_variables_with_the_prefix_configure_it(monkeypatch):
    monkeypatch.setenv("RISKSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("RISKSTREAM_BROKER", "kafka://a:1;kafka://b:2")
    s = load_settings()
    assert s.partitions == 8 and s.bootstrap_servers == "a:1,b:2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RISKSTREAM_PARTITIONS", "zero"),
        ("RISKSTREAM_PARTITIONS", "0"),
        ("RISKSTREAM_BROKER", "localhost"),
        ("RISKSTREAM_MISSING_AGENT_POLICY", "shrug"),
        ("RISKSTREAM_DEADLINE_MS", "-5"),
        ("RISKSTREAM_STORE", "redis://"),
        ("RISKSTREAM_BATCH_MAX_EVENTS", "0"),
    ],
)
def test_a_bad_value_stops_startup_with_a_message_that_names_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert name in str(err.value.code)


def test_thresholds_out_of_order_are_refused():
    with pytest.raises(SettingsError, match="review_threshold"):
        load_settings(review_threshold=0.9, decline_threshold=0.5)


def test_settings_are_frozen():
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError
        Settings().partitions = 3  # type: ignore[misc]
