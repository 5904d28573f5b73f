"""decision: joins agent results by analysis_id and decides approve / review / decline.

Consumes: agent.decision.requests, agent.velocity.results, agent.profile.results,
          agent.geo.results (all keyed by analysis_id), riskstream.decision.deadlines
Produces: decision.results (key analysis_id, value Decision)
Tables:   decisions (analysis_id -> Decision); undecided joins are held in memory
Redis:    with RISKSTREAM_REDIS_URL, every decision is also written to Redis (apps/redis_store.py)
HTTP:     GET /decisions/{analysis_id}, GET /transactions/{transaction_id}/decision
          (from Redis first when it is configured, else or on a miss from the table)
Run:      riskstream worker decision   (web port 6070 unless RISKSTREAM_WEB_PORT)
"""

from __future__ import annotations

import faust
import orjson
from aiohttp import web as aioweb
from faust.web import Request, Response, View

from agents import decision
from agents.contracts import analysis_id_for
from apps.factory import make_app
from apps.metrics import Metrics
from apps.redis_store import RedisDecisions
from apps.settings import Settings, load_settings
from apps.web import install_common_views, routed_lookup
from tables.decision import declare

SOURCE_HEADER = "X-Riskstream-Source"  # "redis" when the answer came from the read model


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or load_settings()
    app = make_app("decision", settings)
    metrics = Metrics.create(app.prometheus_registry)
    tables = declare(app, settings)
    redis = _redis_read_model(app, settings)
    decision.register(app, settings, tables, metrics, on_decided=redis.put if redis else None)
    install_common_views(app)

    def render(raw: bytes) -> dict:
        return orjson.loads(raw)["decision"]

    async def lookup(request: Request, analysis_id: str) -> Response:
        if redis is not None:
            cached = await redis.by_analysis(analysis_id)
            if cached is not None:
                return aioweb.Response(
                    body=cached, content_type="application/json", headers={SOURCE_HEADER: "redis"}
                )
        return await routed_lookup(
            app, request, tables.decisions, analysis_id, render, "decision for analysis_id"
        )

    @app.page("/decisions/{analysis_id}")
    async def decision_by_analysis(self: View, request: Request, analysis_id: str) -> Response:
        return await lookup(request, analysis_id)

    @app.page("/transactions/{transaction_id}/decision")
    async def decision_by_transaction(
        self: View, request: Request, transaction_id: str
    ) -> Response:
        return await lookup(request, analysis_id_for(transaction_id))

    return app


def _redis_read_model(app: faust.App, settings: Settings) -> RedisDecisions | None:
    if not settings.redis_url:
        return None
    store = RedisDecisions(
        settings.redis_url,
        ttl_s=settings.redis_ttl_s,
        timeout_ms=settings.redis_timeout_ms,
        queue_max=settings.redis_queue_max,
        registry=app.prometheus_registry,
    )

    @app.task
    async def write_decisions_to_redis() -> None:
        await store.run_writer()

    return store
