"""Kafka over TLS end to end: topics, a worker and a producer through a TLS listener.

The embedded broker's own TLS listener is not usable, so the test puts a TLS
terminator (Python's ssl, a real handshake with a certificate made by openssl)
in front of it and advertises the TLS address: every client reaches the broker
through TLS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import urllib.request

import orjson
import pytest

from apps.broker import EmbeddedBroker, free_port
from apps.kafka import create_topics
from apps.settings import Settings
from apps.supervisor import Supervisor
from tests.integration.conftest import wait_for
from tests.kafka_helpers import make_certificate


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture
def certificate(tmp_path):
    return make_certificate(tmp_path)


class TlsTerminator(threading.Thread):
    """Accepts TLS on `port` and relays plain bytes to the broker."""

    def __init__(self, port: int, upstream: int, cert, key):
        super().__init__(daemon=True)
        self.port, self.upstream = port, upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.handshakes = 0

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def relay(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def handle(client_r, client_w):
            self.handshakes += 1
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(relay(client_r, up_w), relay(up_r, client_w))

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=self.context)
            self.ready.set()
            async with server:
                await server.serve_forever()

        with contextlib.suppress(RuntimeError):  # stop() ends the loop under it
            self.loop.run_until_complete(main())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_topics_a_worker_and_a_producer_work_over_tls(tmp_path, certificate):
    cert, key = certificate
    tls_port, plain_port = free_port(), free_port()
    # The broker tells clients to come back through the TLS port.
    broker = EmbeddedBroker(
        port=plain_port,
        log_path=tmp_path / "broker.log",
        advertised_url=f"tcp://127.0.0.1:{tls_port}",
    )
    terminator = TlsTerminator(tls_port, plain_port, cert, key)
    terminator.start()
    assert terminator.ready.wait(5)
    try:
        broker.start()
        settings = Settings(
            broker=f"kafka://127.0.0.1:{tls_port}",
            security_protocol="SSL",
            ssl_cafile=cert,
            partitions=2,
            data_dir=tmp_path / "data",
        )
        asyncio.run(create_topics(settings))
        supervisor = Supervisor(
            settings,
            tmp_path / "logs",
            extra_env={"RISKSTREAM_SECURITY_PROTOCOL": "SSL", "RISKSTREAM_SSL_CAFILE": str(cert)},
        )
        supervisor.start("orchestrator", free_port())
        try:
            supervisor.wait_ready(timeout_s=90)
            from apps.kafka import produce

            tx = {
                "schema_version": 1,
                "transaction_id": "tls-1",
                "account_id": "a",
                "amount": 1.0,
                "currency": "EUR",
                "timestamp": 1735689600,
                "merchant_id": "m",
            }
            asyncio.run(produce(settings, [(b"a", orjson.dumps(tx)), (b"a", b"not json")]))
            # The worker consumed both over TLS and produced its fan-out and dead letter.
            metrics = f"{supervisor.services['orchestrator'].url}/metrics"
            wait_for(
                lambda: (
                    "riskstream_transactions_accepted_total 1.0" in _text(metrics)
                    and 'riskstream_dead_letters_total{reason="invalid_json"} 1.0' in _text(metrics)
                ),
                30,
                what="the orchestrator to process both messages",
            )
        finally:
            supervisor.stop_all()
    finally:
        broker.stop()
        terminator.stop()
    assert terminator.handshakes > 0


def test_a_plaintext_client_cannot_talk_to_a_tls_listener(tmp_path, certificate):
    cert, key = certificate
    tls_port, plain_port = free_port(), free_port()
    terminator = TlsTerminator(tls_port, plain_port, cert, key)
    terminator.start()
    assert terminator.ready.wait(5)
    try:
        settings = Settings(broker=f"kafka://127.0.0.1:{tls_port}", partitions=1)
        with pytest.raises(Exception):  # noqa: B017 - aiokafka raises its connection error
            asyncio.run(create_topics(settings, timeout_s=5))
    finally:
        terminator.stop()
