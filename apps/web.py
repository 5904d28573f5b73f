"""HTTP shared by every service: /health, /ready, /metrics, JSON errors and routed lookups."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiohttp import ClientError, ClientTimeout
from aiohttp import web as aioweb
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from agents.table_rows import TableRows, WrittenFirst

log = logging.getLogger(__name__)

ROUTED_HEADER = "X-Riskstream-Routed"
SERVED_BY_HEADER = "X-Riskstream-Served-By"  # which worker answered: host:port
RETRY_AFTER_S = "2"
ROUTE_TIMEOUT = ClientTimeout(total=5)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return aioweb.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def json_error(status: int, message: str, **extra: Any) -> Response:
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return json_response({"error": message, "status": status, **extra}, status, headers)


def is_ready(app: faust.App) -> bool:
    # Faust's web server answers before tables are recovered: check it ourselves.
    return bool(app.tables.recovery.completed.is_set()) and not app.rebalancing


def install_common_views(app: faust.App) -> None:
    setup_prometheus_sensors(app, pattern="/metrics", registry=app.prometheus_registry)

    @aioweb.middleware
    async def json_errors(request: aioweb.Request, handler: Callable) -> aioweb.StreamResponse:
        # Unknown paths and methods answer JSON like every other error.
        try:
            return await handler(request)
        except aioweb.HTTPException as exc:
            if exc.status < 400:
                raise
            return json_error(exc.status, exc.reason)

    app.web.web_app.middlewares.append(json_errors)

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        return json_response({"status": "ok", "service": app.conf.id})

    @app.page("/ready")
    async def ready(self: View, request: Request) -> Response:
        recovered = bool(app.tables.recovery.completed.is_set())
        body = {
            "service": app.conf.id,
            "ready": recovered and not app.rebalancing,
            "tables_recovered": recovered,
            "rebalancing": bool(app.rebalancing),
        }
        if body["ready"]:
            return json_response(body)
        return json_response(body, 503, {"Retry-After": RETRY_AFTER_S})


async def routed_lookup(
    app: faust.App,
    request: Request,
    table: faust.Table,
    key: str,
    render: Callable[[bytes], Any],
    what: str,
    rows: TableRows | None = None,
) -> Response:
    """Answer a lookup of `key` in `table` from the worker that owns its partition.

    The table key must be the source message key serialised the same way (raw
    UTF-8), or the hash that picks the owner points at the wrong worker.
    ``rows``: the agent's rows of the table, whose writes not yet written out
    are read first.
    """
    if not is_ready(app):
        return json_error(503, "rebalancing or recovering tables; retry shortly")
    try:
        owner = app.router.key_store(table.name, key.encode())
    except KeyError:
        return json_error(503, "partition ownership is not known yet; retry shortly")
    me = (app.conf.canonical_url.host, app.conf.canonical_url.port)
    if (owner.host, owner.port) != me:
        if request.headers.get(ROUTED_HEADER):
            # The sender thinks we own it and we think not: assignment is moving.
            return json_error(503, "partition ownership is changing; retry shortly")
        return await _forward(app, request, owner)
    served_by = {SERVED_BY_HEADER: f"{me[0]}:{me[1]}"}
    raw = (table if rows is None else WrittenFirst(rows, table)).get(key.encode())
    if raw is None:
        return json_response(
            {"error": f"no {what} {key!r}", "status": 404, "key": key}, 404, served_by
        )
    return json_response(render(raw), headers=served_by)


async def _forward(app: faust.App, request: Request, owner: Any) -> Response:
    url = request.url.with_host(owner.host).with_port(int(owner.port))
    try:
        async with app.http_client.get(
            url, headers={ROUTED_HEADER: "1"}, timeout=ROUTE_TIMEOUT
        ) as resp:
            body = await resp.read()
            headers = {
                name: resp.headers[name]
                for name in ("Retry-After", SERVED_BY_HEADER)
                if name in resp.headers
            }
            return aioweb.Response(
                body=body, status=resp.status, content_type=resp.content_type, headers=headers
            )
    except (ClientError, TimeoutError) as exc:
        log.warning("routing %s to %s failed: %r", request.url.path, url, exc)
        return json_error(503, f"owner {owner} did not answer; retry shortly")
