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
from typing import Any

from tables.hourly import HourlyEvents, read_rows, write_rows
from tables.merchant_windows import MerchantWindow
from tables.windows import AccountWindow

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
LATE_MS = 600_000
LATENESS_MS = 300_000
# kind -> (sizes, the default RISKSTREAM_MAX_EVENTS_PER_*)
KINDS: dict[str, tuple[tuple[int, ...], int]] = {
    "merchant": ((100, 1_000, 5_000, 20_000), 20_000),
    "account": ((100, 500, 2_000), 2_000),
}


def _add(state: HourlyEvents, time_ms: int, tx: str, other: str, cap: int) -> None:
    if isinstance(state, MerchantWindow):
        state.add(
            time_ms=time_ms,
            transaction_id=tx,
            account_id=other,
            max_events=cap,
            allowed_lateness_ms=LATENESS_MS,
        )
    else:
        assert isinstance(state, AccountWindow)
        state.add(
            time_ms=time_ms,
            transaction_id=tx,
            amount=12.5,
            merchant_id=other,
            max_events=cap,
            allowed_lateness_ms=LATENESS_MS,
        )


def _cls(kind: str) -> type[HourlyEvents]:
    return MerchantWindow if kind == "merchant" else AccountWindow


def _filled(kind: str, n: int, cap: int) -> tuple[dict[bytes, bytes], HourlyEvents, int]:
    table: dict[bytes, bytes] = {}
    step = DAY_MS // n
    state = _cls(kind)(T0)
    for i in range(n):
        _add(state, T0 + i * step, f"fill-{i:06d}", f"other-{i % max(1, n // 4)}", cap)
    write_rows(table, b"k", state)
    return table, state, step


def _one(state: HourlyEvents, table: dict, time_ms: int, tx: str, cap: int) -> int:
    _add(state, time_ms, tx, f"other-{tx}", cap)
    written = write_rows(table, b"k", state)
    state.windows(time_ms)
    return written


def measure(kind: str, n: int, cap: int) -> dict[str, Any]:
    """Per-transaction CPU µs and bytes written at a key holding ``n`` events."""
    out: dict[str, Any] = {"events": n}
    for mode in ("kept", "from rows"):
        transactions = 1000 if mode == "kept" else max(20, min(200, 200_000 // n))
        for order in ("in order", "late"):
            table, state, step = _filled(kind, n, cap)
            written, cpu_s = 0, 0.0
            for i in range(transactions):
                time_ms = state.max_time_ms + step
                if order == "late":
                    # The window slides on (not timed), and this one comes 10 min late.
                    _one(state, table, time_ms, f"on-{i:06d}", cap)
                    time_ms -= LATE_MS
                started = time.process_time()
                if mode == "from rows":
                    loaded = read_rows(_cls(kind), table, b"k", cap)
                    assert loaded is not None
                    state = loaded
                written += _one(state, table, time_ms, f"tx-{i:06d}", cap)
                cpu_s += time.process_time() - started
            out[f"{mode}, {order}"] = {
                "cpu_us": round(cpu_s / transactions * 1e6, 1),
                "bytes": round(written / transactions),
            }
    out["stored_bytes"] = sum(len(v) for v in _filled(kind, n, cap)[0].values())
    return out


def run_windows_bench(json_path: Any = None) -> int:
    import orjson
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    report: dict[str, list[dict[str, Any]]] = {}
    for kind, (sizes, cap) in KINDS.items():
        rows = report[f"{kind}_windows"] = [measure(kind, n, cap) for n in sizes]
        article = "an" if kind[0] in "aeiou" else "a"
        table = Table(title=f"one transaction at {article} {kind}: CPU µs / bytes written")
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
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_path}")
    return 0
