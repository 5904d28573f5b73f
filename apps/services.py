"""The five services by name, each built on demand."""

from __future__ import annotations

import importlib

import faust

from agents.topics import SERVICES
from apps.settings import Settings


def create_service_app(service: str, settings: Settings) -> faust.App:
    if service not in SERVICES:
        raise SystemExit(f"riskstream: unknown service {service!r} (one of: {', '.join(SERVICES)})")
    module = importlib.import_module(f"apps.{service}")
    return module.create_app(settings)
