"""profile: each account's spending profile (amounts, merchants, hours, channels).

Consumes: agent.profile.requests (key account_id)
Produces: agent.profile.results (key analysis_id, value AgentResult)
Tables:   account_profiles (account_id -> profile), profile_results (transaction_id -> result)
HTTP:     GET /accounts/{account_id}/profile
Run:      riskstream worker profile   (web port 6068 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

from functools import partial

import faust
import orjson
from faust.web import Request, Response, View

from agents.account_agent import register_account_agent
from agents.scoring import ProfileRules
from agents.steps import profile_step
from apps.factory import make_app
from apps.metrics import Metrics
from apps.settings import Settings, load_settings
from apps.web import install_common_views, routed_lookup
from tables.agents import declare_profile
from tables.profile_state import Profile, profile_view


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("profile", settings)
    metrics = Metrics.create(app.prometheus_registry)
    tables = declare_profile(app, settings)
    step = partial(profile_step, rules=ProfileRules())
    accounts = register_account_agent(
        app,
        "profile",
        tables,
        step,
        metrics,
        max_events=settings.batch_max_events,
        write_interval_s=settings.table_write_interval_ms / 1000.0,
    )
    install_common_views(app)

    @app.page("/accounts/{account_id}/profile")
    async def account_profile(self: View, request: Request, account_id: str) -> Response:
        def render(raw: bytes) -> dict:
            return profile_view(Profile.from_dict(orjson.loads(raw)), account_id)

        return await routed_lookup(
            app, request, tables.accounts, account_id, render, "profile for account", accounts
        )

    return app
