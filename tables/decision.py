"""Tables of the decision service."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from apps.factory import raw_table
from apps.settings import Settings


@dataclass(frozen=True)
class DecisionTables:
    # analysis_id -> join state (tables.join_state.Analysis as JSON) while undecided
    pending_analyses: faust.Table
    # analysis_id -> {"decision": Decision JSON, "decided_by": [topic, partition, offset]}
    decisions: faust.Table


def declare(app: faust.App, settings: Settings) -> DecisionTables:
    return DecisionTables(
        pending_analyses=raw_table(app, settings, "pending_analyses"),
        decisions=raw_table(app, settings, "decisions"),
    )
