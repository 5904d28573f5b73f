"""decision: joins agent results by analysis_id and decides approve / review / decline.

Consumes: agent.decision.requests, agent.velocity.results, agent.profile.results,
          agent.geo.results (all keyed by analysis_id), riskstream.decision.deadlines
Produces: decision.results (key analysis_id, value Decision)
Tables:   pending_analyses (analysis_id -> join state), decisions (analysis_id -> Decision)
HTTP:     GET /decisions/{analysis_id}, GET /transactions/{transaction_id}/decision
Run:      riskstream worker decision   (web port 6070 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

import faust
import orjson
from faust.web import Request, Response, View

from agents import decision
from agents.contracts import analysis_id_for
from apps.factory import make_app
from apps.metrics import Metrics
from apps.settings import Settings, load_settings
from apps.web import install_common_views, routed_lookup
from tables.decision import declare


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("decision", settings)
    metrics = Metrics.create(app.prometheus_registry)
    tables = declare(app, settings)
    decision.register(app, settings, tables, metrics)
    install_common_views(app)

    def render(raw: bytes) -> dict:
        return orjson.loads(raw)["decision"]

    @app.page("/decisions/{analysis_id}")
    async def decision_by_analysis(self: View, request: Request, analysis_id: str) -> Response:
        return await routed_lookup(
            app, request, tables.decisions, analysis_id, render, "decision for analysis_id"
        )

    @app.page("/transactions/{transaction_id}/decision")
    async def decision_by_transaction(
        self: View, request: Request, transaction_id: str
    ) -> Response:
        key = analysis_id_for(transaction_id)
        return await routed_lookup(
            app, request, tables.decisions, key, render, "decision for analysis_id"
        )

    return app
