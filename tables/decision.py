"""Tables of the decision service (undecided joins are in memory: agents/decision.py)."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from apps.factory import raw_table
from apps.settings import Settings


@dataclass(frozen=True)
class DecisionTables:
    # analysis_id -> {"decision": Decision JSON, "decided_by": [topic, partition, offset]}
    decisions: faust.Table


def declare(app: faust.App, settings: Settings) -> DecisionTables:
    return DecisionTables(
        decisions=raw_table(app, settings, "decisions"),
    )
