"""Tables of the three scoring agents (velocity, profile, geo)."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from apps.factory import raw_table
from apps.settings import Settings


@dataclass(frozen=True)
class VelocityTables:
    # account_id -> its newest hour and watermark; account_id + 0xff + hour -> an
    # older hour's events (tables/hourly.py). merchant_velocity likewise by merchant_id.
    account_velocity: faust.Table
    merchant_velocity: faust.Table
    # transaction_id -> the AgentResult it got, in the merchant's partition (stage two)
    results: faust.Table


@dataclass(frozen=True)
class AccountTables:
    accounts: faust.Table  # account_id -> the agent's state for the account (JSON)
    # transaction_id -> the AgentResult it got. Rows live in the partition of the
    # account (the request's key), where every copy of the transaction arrives;
    # a copy that comes again, however late, gets this very result and changes nothing.
    results: faust.Table


def declare_velocity(app: faust.App, settings: Settings) -> VelocityTables:
    return VelocityTables(
        account_velocity=raw_table(app, settings, "account_velocity"),
        merchant_velocity=raw_table(app, settings, "merchant_velocity"),
        results=raw_table(app, settings, "velocity_results"),
    )


def declare_profile(app: faust.App, settings: Settings) -> AccountTables:
    return AccountTables(
        accounts=raw_table(app, settings, "account_profiles"),
        results=raw_table(app, settings, "profile_results"),
    )


def declare_geo(app: faust.App, settings: Settings) -> AccountTables:
    return AccountTables(
        accounts=raw_table(app, settings, "account_geo"),
        results=raw_table(app, settings, "geo_results"),
    )
