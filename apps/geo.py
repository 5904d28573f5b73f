"""geo: home and last location, distances, implied speed and impossible travel.

Consumes: agent.geo.requests (key account_id)
Produces: agent.geo.results (key analysis_id, value AgentResult)
Tables:   account_geo (account_id -> geo state), geo_results (transaction_id -> result)
HTTP:     GET /accounts/{account_id}/geo
Run:      riskstream worker geo   (web port 6069 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

from functools import partial

import faust
import orjson
from faust.web import Request, Response, View

from agents.account_agent import register_account_agent
from agents.scoring import GeoRules
from agents.steps import geo_step
from apps.factory import make_app
from apps.metrics import Metrics
from apps.settings import Settings, load_settings
from apps.web import install_common_views, routed_lookup
from tables.agents import declare_geo
from tables.geo_state import GeoState, geo_view


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("geo", settings)
    metrics = Metrics.create(app.prometheus_registry)
    tables = declare_geo(app, settings)
    rules = GeoRules(impossible_travel_kmh=settings.impossible_travel_kmh)
    accounts = register_account_agent(
        app,
        "geo",
        tables,
        partial(geo_step, rules=rules),
        metrics,
        max_events=settings.batch_max_events,
        write_interval_s=settings.table_write_interval_ms / 1000.0,
    )
    install_common_views(app)

    @app.page("/accounts/{account_id}/geo")
    async def account_geo(self: View, request: Request, account_id: str) -> Response:
        def render(raw: bytes) -> dict:
            return geo_view(GeoState.from_dict(orjson.loads(raw)), account_id)

        return await routed_lookup(
            app, request, tables.accounts, account_id, render, "geo state for account", accounts
        )

    return app
