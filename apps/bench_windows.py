"""`riskstream bench --merchant-windows`: what one transaction costs at a busy key.

An account's and a merchant's windows hold its last 24 h of transactions
(tables/hourly.py). For merchants holding 100 … 20,000 of them and accounts
holding 100 … 2,000 (the default caps), spread evenly over the day, this times
velocity's own work for one more transaction, in order (the window slides by
one) and 10 minutes late (out of order), and counts the bytes the table rows
(and so the changelog) take per transaction:

- **kept**: the key's windows are in the worker's cache;
- **from rows**: they are read from the table rows first (after a restart, a
  rebalance, or when the cache let them go).

CPU time is per transaction, in the process (no broker, no Faust): the part of a
transaction's cost that depends on the key's traffic.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tables.hourly import HourlyEvents, read_rows, write_rows
from tables.merchant_windows import MerchantWindow
from tables.windows import AccountWindow

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
LATE_MS = 600_000
LATENESS_MS = 300_000


@dataclass(frozen=True)
class Kind:
    cls: type[HourlyEvents]
    sizes: tuple[int, ...]
    cap: int  # the default RISKSTREAM_MAX_EVENTS_PER_*
    event: Callable[[int, str, str], tuple]  # (time, transaction id, the other id) -> event


KINDS = {
    "merchant": Kind(
        MerchantWindow, (100, 1_000, 5_000, 20_000), 20_000, lambda t, i, o: (t, i, o)
    ),
    "account": Kind(AccountWindow, (100, 500, 2_000), 2_000, lambda t, i, o: (t, i, 12.5, o)),
}


def _one(kind: Kind, state: HourlyEvents, table: dict, time_ms: int, tx: str) -> int:
    event = kind.event(time_ms, tx, f"other-{tx}")  # each by a new account, at a new merchant
    state.add_event(event, max_events=kind.cap, allowed_lateness_ms=LATENESS_MS)
    written = write_rows(table, b"k", state)
    state.windows(time_ms)
    return written


def _filled(kind: Kind, n: int) -> tuple[dict[bytes, bytes], HourlyEvents, int]:
    table: dict[bytes, bytes] = {}
    step = DAY_MS // n
    state = kind.cls(T0)
    for i in range(n):
        event = kind.event(T0 + i * step, f"fill-{i:06d}", f"other-{i % max(1, n // 4)}")
        state.add_event(event, max_events=kind.cap, allowed_lateness_ms=LATENESS_MS)
    write_rows(table, b"k", state)
    return table, state, step


def measure(kind: Kind, n: int) -> dict[str, Any]:
    """Per-transaction CPU µs and bytes written at a key holding ``n`` events."""
    out: dict[str, Any] = {"events": n}
    for mode in ("kept", "from rows"):
        transactions = 1000 if mode == "kept" else max(20, min(200, 200_000 // n))
        for order in ("in order", "late"):
            table, state, step = _filled(kind, n)
            out.setdefault("stored_bytes", sum(len(v) for v in table.values()))
            written, cpu_s = 0, 0.0
            for i in range(transactions):
                time_ms = state.max_time_ms + step
                if order == "late":
                    # The window slides on (not timed), and this one comes 10 min late.
                    _one(kind, state, table, time_ms, f"on-{i:06d}")
                    time_ms -= LATE_MS
                started = time.process_time()
                if mode == "from rows":
                    loaded = read_rows(kind.cls, table, b"k", kind.cap)
                    assert loaded is not None
                    state = loaded
                written += _one(kind, state, table, time_ms, f"tx-{i:06d}")
                cpu_s += time.process_time() - started
            out[f"{mode}, {order}"] = {
                "cpu_us": round(cpu_s / transactions * 1e6, 1),
                "bytes": round(written / transactions),
            }
    return out


def run_windows_bench(json_path: Any = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from apps.bench import write_report

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    report: dict[str, list[dict[str, Any]]] = {}
    for name, kind in KINDS.items():
        rows = report[f"{name}_windows"] = [measure(kind, n) for n in kind.sizes]
        article = "an" if name[0] in "aeiou" else "a"
        table = Table(title=f"one transaction at {article} {name}: CPU µs / bytes written")
        table.add_column("events in 24 h", justify="right")
        columns = [k for k in rows[0] if k not in ("events", "stored_bytes")]
        for name in columns:
            table.add_column(name, justify="right")
        table.add_column("all its rows", justify="right")
        for row in rows:
            cells = [f"{row[c]['cpu_us']:,.0f} µs / {row[c]['bytes']:,} B" for c in columns]
            table.add_row(f"{row['events']:,}", *cells, f"{row['stored_bytes']:,} B")
        console.print(table)
    if json_path is not None:
        write_report(console, json_path, report)
    return 0
