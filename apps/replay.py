"""`riskstream replay FILE`: produce a file of transactions to `transactions`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agents.files import RAW, count_transactions, read_transactions
from apps.kafka import produce
from apps.settings import Settings


def file_messages(rows: Iterator[dict[str, Any]]) -> Iterator[tuple[bytes | None, bytes]]:
    """Rows as they go on the wire: keyed by account_id; an unreadable line as it was."""
    for row in rows:
        if RAW in row:
            raw = row[RAW]  # bytes when the line was not UTF-8
            yield None, raw if isinstance(raw, bytes) else raw.encode()
            continue
        account = row.get("account_id")
        key = account.encode() if isinstance(account, str) else None
        yield key, orjson.dumps(row)


async def run_replay(settings: Settings, path: Path, *, rate: float = 0.0) -> int:
    if not path.exists():
        raise SystemExit(f"riskstream replay: {path} does not exist")
    total = count_transactions(path)
    columns = [
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns) as progress:
        task = progress.add_task(path.name, total=total, rate=0.0)
        started = [0.0]

        def on_sent(n: int) -> None:
            import time

            now = time.monotonic()
            if not started[0]:
                started[0] = now
            if n % 200 == 0 or n == total:
                elapsed = max(now - started[0], 1e-6)
                progress.update(task, completed=n, rate=n / elapsed)

        sent = await produce(
            settings, file_messages(read_transactions(path)), rate=rate, on_sent=on_sent
        )
        progress.update(task, completed=sent)
    print(f"replayed {sent} messages from {path} to transactions")
    return 0
