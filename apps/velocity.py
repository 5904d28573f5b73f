"""velocity: event-time sliding windows per account and per merchant.

Consumes: agent.velocity.requests (key account_id),
          riskstream.velocity.by-merchant (its own second stage, key merchant_id),
          riskstream.velocity.watermarks (ordering=event_time only)
Produces: agent.velocity.results (key analysis_id, value AgentResult)
Tables:   account_velocity (account_id -> recent events), merchant_velocity (merchant_id ->
          recent events); both a row per event-time hour (tables/hourly.py)
HTTP:     GET /accounts/{account_id}/velocity, GET /merchants/{merchant_id}/velocity
Run:      riskstream worker velocity   (web port 6067 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from agents import velocity
from agents.contracts import ms_to_rfc3339
from agents.table_rows import WrittenFirst
from apps.factory import make_app
from apps.metrics import Metrics
from apps.settings import Settings, load_settings
from apps.web import install_common_views, routed_lookup
from tables.agents import declare_velocity
from tables.hourly import load_rows
from tables.merchant_windows import MerchantWindow
from tables.windows import AccountWindow


def account_view(state: AccountWindow, account_id: str) -> dict:
    return {
        "account_id": account_id,
        "as_of": ms_to_rfc3339(state.max_time_ms),
        "windows": state.windows(state.max_time_ms),
        "late_events": state.late_events,
    }


def merchant_view(state: MerchantWindow, merchant_id: str) -> dict:
    return {
        "merchant_id": merchant_id,
        "as_of": ms_to_rfc3339(state.max_time_ms),
        "windows": state.windows(state.max_time_ms),
    }


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("velocity", settings)
    metrics = Metrics.create(app.prometheus_registry)
    tables = declare_velocity(app, settings)
    account_rows, merchant_rows = velocity.register(app, settings, tables, metrics)
    install_common_views(app)

    @app.page("/accounts/{account_id}/velocity")
    async def account_velocity(self: View, request: Request, account_id: str) -> Response:
        def render(own: bytes) -> dict:
            key, cap = account_id.encode(), settings.max_events_per_account
            rows = WrittenFirst(account_rows, tables.account_velocity)
            return account_view(load_rows(AccountWindow, rows, key, own, cap), account_id)

        return await routed_lookup(
            app,
            request,
            tables.account_velocity,
            account_id,
            render,
            "velocity state for account",
            rows=account_rows,
        )

    @app.page("/merchants/{merchant_id}/velocity")
    async def merchant_velocity(self: View, request: Request, merchant_id: str) -> Response:
        def render(own: bytes) -> dict:
            key, cap = merchant_id.encode(), settings.max_events_per_merchant
            rows = WrittenFirst(merchant_rows, tables.merchant_velocity)
            return merchant_view(load_rows(MerchantWindow, rows, key, own, cap), merchant_id)

        return await routed_lookup(
            app,
            request,
            tables.merchant_velocity,
            merchant_id,
            render,
            "velocity state for merchant",
            rows=merchant_rows,
        )

    return app
