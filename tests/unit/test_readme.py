"""The README documents every setting, reason code, topic and dead-letter reason there is."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from agents import topics
from agents.contracts import DeadLetterReason
from agents.scoring import REASON_CODES, REASON_WEIGHTS
from apps.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str):
    name = f"RISKSTREAM_{field.upper()}"
    if field.startswith("weight_"):
        name = "RISKSTREAM_WEIGHT_VELOCITY"
    assert name in README


@pytest.mark.parametrize("code", sorted(REASON_CODES))
def test_every_reason_code_is_documented_with_its_weight(code: str):
    row = re.search(rf"^\| `{code}` \| ([0-9.]+) \|", README, re.M)
    assert row, code
    assert float(row.group(1)) == REASON_WEIGHTS[code]


@pytest.mark.parametrize("topic", topics.contract_topics() + topics.internal_topics())
def test_every_topic_is_documented(topic: str):
    generic = re.sub(r"agent\.(velocity|profile|geo)\.", "agent.<name>.", topic)
    assert f"`{topic}`" in README or f"`{generic}`" in README


@pytest.mark.parametrize("reason", typing.get_args(DeadLetterReason))
def test_every_dead_letter_reason_is_documented(reason: str):
    assert f"| `{reason}` |" in README
