"""Running services as separate processes: what `riskstream up` and the integration tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from apps.settings import Settings


@dataclass
class ServiceProcess:
    name: str  # e.g. "velocity" or "velocity-2" for a second worker
    service: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Supervisor:
    settings: Settings
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(
        self, service: str, port: int, *, name: str | None = None, data_dir: Path | None = None
    ) -> ServiceProcess:
        name = name or service
        data_dir = data_dir or self.settings.data_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        sp = ServiceProcess(name, service, port, data_dir, self.log_dir / f"{name}.log")
        env = {
            **os.environ,
            **self.extra_env,
            "RISKSTREAM_BROKER": self.settings.broker,
            "RISKSTREAM_DATA_DIR": str(data_dir),
            "RISKSTREAM_WEB_PORT": str(port),
            "RISKSTREAM_WEB_HOST": "127.0.0.1",
            "RISKSTREAM_PARTITIONS": str(self.settings.partitions),
        }
        log = open(sp.log_path, "ab")  # noqa: SIM115 - the child keeps it
        sp.process = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "worker", service],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them in order
        )
        log.close()
        self.services[name] = sp
        return sp

    def wait_ready(self, timeout_s: float = 120.0, names: list[str] | None = None) -> None:
        """Block until every service's /ready answers 200; fail fast if one dies."""
        pending = set(names or self.services)
        deadline = time.monotonic() + timeout_s
        while pending:
            for name in sorted(pending):
                sp = self.services[name]
                if not sp.alive():
                    raise RuntimeError(f"{name} exited before it was ready:\n{sp.log_tail()}")
                if http_status(f"{sp.url}/ready") == 200:
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))}"
                )
            time.sleep(0.25)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        sp = self.services[name]
        if sp.alive():
            os.kill(sp.pid, sig)  # type: ignore[arg-type]
            sp.process.wait(30)  # type: ignore[union-attr]

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        sp = self.services[name]
        if not sp.alive():
            return
        os.kill(sp.pid, signal.SIGTERM)  # type: ignore[arg-type]
        try:
            sp.process.wait(timeout_s)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            os.kill(sp.pid, signal.SIGKILL)  # type: ignore[arg-type]
            sp.process.wait(10)  # type: ignore[union-attr]

    def stop_all(self, timeout_s: float = 20.0) -> None:
        # SIGTERM everyone first so they shut down in parallel, then reap.
        for sp in self.services.values():
            if sp.alive():
                os.kill(sp.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout_s
        for sp in self.services.values():
            if sp.process is None:
                continue
            try:
                sp.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                sp.process.kill()
                sp.process.wait(10)


def http_status(url: str, timeout_s: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None
