"""orchestrator: validates transactions, dead-letters the bad ones, fans out the good ones.

Consumes: transactions (raw bytes; key account_id, or anything: it re-keys),
          riskstream.transactions.by-account (its own re-keyed messages)
Produces: agent.velocity|profile|geo.requests (key account_id),
          agent.decision.requests (key analysis_id), transactions.dlq (original key),
          riskstream.velocity.watermarks (ordering=event_time only)
Tables:   seen_transactions (transaction_id -> body fingerprint)
HTTP:     /health, /ready, /metrics
Run:      riskstream worker orchestrator   (web port 6066 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

import faust

from agents import orchestrator
from apps.factory import make_app
from apps.metrics import Metrics
from apps.settings import Settings, load_settings
from apps.web import install_common_views
from tables.orchestrator import declare


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("orchestrator", settings)
    metrics = Metrics.create(app.prometheus_registry)
    orchestrator.register(app, settings, declare(app, settings), metrics)
    install_common_views(app)
    return app
