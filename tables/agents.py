"""Tables of the three scoring agents (velocity, profile, geo)."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from apps.factory import raw_table
from apps.settings import Settings


@dataclass(frozen=True)
class VelocityTables:
    account_velocity: faust.Table  # account_id -> {"state": AccountVelocity}
    merchant_velocity: faust.Table  # merchant_id -> {"state": MerchantVelocity}


@dataclass(frozen=True)
class AccountTable:
    accounts: faust.Table  # account_id -> {"state": ..., "recent": {transaction_id: AgentResult}}


def declare_velocity(app: faust.App, settings: Settings) -> VelocityTables:
    return VelocityTables(
        account_velocity=raw_table(app, settings, "account_velocity"),
        merchant_velocity=raw_table(app, settings, "merchant_velocity"),
    )


def declare_profile(app: faust.App, settings: Settings) -> AccountTable:
    return AccountTable(accounts=raw_table(app, settings, "account_profiles"))


def declare_geo(app: faust.App, settings: Settings) -> AccountTable:
    return AccountTable(accounts=raw_table(app, settings, "account_geo"))
