"""Container health check: GET /health on this container's riskstream worker.

The image runs every service, so the port is not fixed: RISKSTREAM_WEB_PORT
when set, else the default port of the service named on the command line of
process 1 (`riskstream worker SERVICE`). A container that runs anything else
(`riskstream topics create`, a replay) has no web server and counts as healthy.

Exit status 0 is healthy, 1 unhealthy (what Docker's HEALTHCHECK expects).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

TIMEOUT_S = 3.0


def service_from_argv(argv: Sequence[str]) -> str | None:
    """The SERVICE of `... worker SERVICE`, or None for any other command."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "worker":
            return argv[i + 1]
    return None


def port_to_check(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    if env.get("RISKSTREAM_WEB_PORT"):
        return int(env["RISKSTREAM_WEB_PORT"])
    service = service_from_argv(argv)
    if service is None:
        return None
    from apps.settings import DEFAULT_WEB_PORTS

    return DEFAULT_WEB_PORTS[service]


def pid1_argv(cmdline: Path = Path("/proc/1/cmdline")) -> list[str]:
    return [a for a in cmdline.read_bytes().decode(errors="replace").split("\0") if a]


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    port = port_to_check(pid1_argv() if argv is None else argv, env)
    if port is None:
        return 0
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
