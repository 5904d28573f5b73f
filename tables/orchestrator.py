"""Tables of the orchestrator."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from apps.factory import raw_table
from apps.settings import Settings


@dataclass(frozen=True)
class OrchestratorTables:
    # transaction_id -> fingerprint of the accepted body (hex string, UTF-8)
    seen_transactions: faust.Table


def declare(app: faust.App, settings: Settings) -> OrchestratorTables:
    return OrchestratorTables(seen_transactions=raw_table(app, settings, "seen_transactions"))
