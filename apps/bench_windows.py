"""`riskstream bench --merchant-windows`: what one transaction costs at a busy merchant.

A merchant's windows hold its last 24 h of transactions (tables/merchant_windows.py).
For merchants holding 100 … 20,000 of them, spread evenly over the day, this
times the merchant stage's own work for one more transaction, in order (the
window slides by one) and 10 minutes late (out of order), and counts the bytes
the table rows (and so the changelog) take per transaction:

- **kept**: the merchant's windows are in the worker's cache;
- **from rows**: they are read from the table rows first (after a restart, a
  rebalance, or when the cache let them go).

CPU time is per transaction, in the process (no broker, no Faust): the part of a
transaction's cost that depends on the merchant's traffic.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tables.merchant_windows import MerchantWindow, read_merchant, write_merchant

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
SIZES = (100, 1_000, 5_000, 20_000)
MAX_EVENTS = 20_000  # the default RISKSTREAM_MAX_EVENTS_PER_MERCHANT
LATE_MS = 600_000


def _filled(n: int) -> tuple[dict[bytes, bytes], MerchantWindow, int]:
    table: dict[bytes, bytes] = {}
    step = DAY_MS // n
    state = MerchantWindow(T0)
    for i in range(n):
        state.add(
            time_ms=T0 + i * step,
            transaction_id=f"fill-{i:06d}",
            account_id=f"acct-{i % max(1, n // 4)}",
            max_events=MAX_EVENTS,
            allowed_lateness_ms=300_000,
        )
    write_merchant(table, b"m", state)
    return table, state, step


def _one(state: MerchantWindow, table: dict[bytes, bytes], time_ms: int, tx: str) -> int:
    state.add(
        time_ms=time_ms,
        transaction_id=tx,
        account_id=f"acct-{tx}",
        max_events=MAX_EVENTS,
        allowed_lateness_ms=300_000,
    )
    written = write_merchant(table, b"m", state)
    state.windows(time_ms)
    return written


def measure(n: int) -> dict[str, Any]:
    """Per-transaction CPU µs and bytes written at a merchant holding ``n`` events."""
    out: dict[str, Any] = {"events": n}
    for mode in ("kept", "from rows"):
        transactions = 1000 if mode == "kept" else max(20, min(200, 200_000 // n))
        for order in ("in order", "late"):
            table, state, step = _filled(n)
            written, cpu_s = 0, 0.0
            for i in range(transactions):
                time_ms = state.max_time_ms + step
                if order == "late":
                    # The window slides on (not timed), and this one comes 10 min late.
                    _one(state, table, time_ms, f"on-{i:06d}")
                    time_ms -= LATE_MS
                started = time.process_time()
                if mode == "from rows":
                    loaded = read_merchant(table, b"m", MAX_EVENTS)
                    assert loaded is not None
                    state = loaded
                written += _one(state, table, time_ms, f"tx-{i:06d}")
                cpu_s += time.process_time() - started
            out[f"{mode}, {order}"] = {
                "cpu_us": round(cpu_s / transactions * 1e6, 1),
                "bytes": round(written / transactions),
            }
    out["stored_bytes"] = sum(len(v) for v in _filled(n)[0].values())
    return out


def run_windows_bench(json_path: Any = None) -> int:
    import orjson
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    rows = [measure(n) for n in SIZES]
    table = Table(title="one transaction at a merchant: CPU µs / bytes written")
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
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(orjson.dumps({"merchant_windows": rows}, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_path}")
    return 0
