"""Kafka helpers for tests: an independent client (confluent-kafka / librdkafka) where
the tests act as a user, and aiokafka where they read topics by partition."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer


def produce(
    bootstrap: str, messages: list[tuple[bytes | None, bytes]], topic: str = "transactions"
) -> None:
    """Produce like a user would: librdkafka, with the Java client's partitioner so
    keyed messages land where any Kafka client would put them."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "acks": "all",
        }
    )
    for key, value in messages:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages were not delivered"


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    until: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float | None = None,
    **client: Any,
) -> list[Any]:
    """Read a topic from the start until `until` messages arrived, or no new ones for `idle_s`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    out.append(Message(m.topic, m.partition, m.offset, m.key, m.value))
                    last_new = time.monotonic()
            if until is not None and len(out) >= until:
                break
            if idle_s is not None and time.monotonic() - last_new > idle_s:
                break
    finally:
        await consumer.stop()
    return out


class Message:
    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes):
        self.topic, self.partition, self.offset, self.key, self.value = (
            topic,
            partition,
            offset,
            key,
            value,
        )

    @property
    def json(self) -> Any:
        return orjson.loads(self.value)

    def __repr__(self) -> str:
        return f"Message({self.topic}/{self.partition}@{self.offset} {self.key!r} {self.value[:120]!r})"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make_certificate(directory, common_name: str = "127.0.0.1"):
    """A self-signed certificate and key made by openssl, valid for 127.0.0.1."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make a test certificate"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={common_name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
