"""Two workarounds for how Faust's Kafka driver meets brokers, each switched by a setting.

1. Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. A broker that
   answers a multi-partition fetch only when that wait runs out (the embedded
   one does) then adds up to 1.5 s on every hop, so the wait is a setting.

2. Faust's table recovery reads "how far does this changelog go" from the
   ListOffsets answer. The embedded broker answers with the base offset of the
   last record batch plus one, not the offset after its last record, so a batch
   of several changelog records makes recovery stop early (losing the last
   updates) or fail with ConsistencyError once the worker has written past it.
   With ``verify_end_offsets`` the end offsets are checked against the
   high-water mark of a real fetch, which every broker reports correctly; on a
   correct broker this changes nothing and costs one fetch per recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)

_ORIGINAL_CREATE = AIOKafkaConsumerThread._create_worker_consumer
_ORIGINAL_HIGHWATERS = AIOKafkaConsumerThread._highwaters
_fetch_max_wait_ms = 1500
_verify_end_offsets = False
_auth: dict = {}


def configure(
    *, fetch_max_wait_ms: int, verify_end_offsets: bool, auth: dict | None = None
) -> None:
    """Applies to every Faust app in this process (one per process in production)."""
    global _fetch_max_wait_ms, _verify_end_offsets, _auth
    _auth = dict(auth or {})
    _fetch_max_wait_ms = fetch_max_wait_ms
    _verify_end_offsets = verify_end_offsets
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    AIOKafkaConsumerThread._highwaters = _highwaters


def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
    consumer = _ORIGINAL_CREATE(self, transport)
    consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # read when its fetcher starts
    return consumer


async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
    listed = await _ORIGINAL_HIGHWATERS(self, partitions)
    if not _verify_end_offsets or self.consumer.in_transaction:
        return listed
    consumer = self._ensure_consumer()
    return await fetched_end_offsets(consumer._client._bootstrap_servers, listed, **_auth)


async def fetched_end_offsets(
    bootstrap: str | Iterable[str],
    listed: Mapping[TopicPartition, int | None],
    **auth: object,
) -> dict[TopicPartition, int | None]:
    """End offsets as the high-water mark of a fetch from just before the listed end."""
    result = dict(listed)
    probe_tps = [tp for tp, end in listed.items() if end]
    if not probe_tps:
        return result
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50, **auth
    )
    await probe.start()
    try:
        probe.assign(probe_tps)
        for tp in probe_tps:
            probe.seek(tp, max(0, int(listed[tp]) - 1))
        waiting = set(probe_tps)
        for _ in range(20):
            await probe.getmany(*waiting, timeout_ms=100)
            for tp in list(waiting):
                hw = probe.highwater(tp)
                if hw is not None:
                    waiting.discard(tp)
                    if hw != listed[tp]:
                        log.info("end offset of %s is %s, not the listed %s", tp, hw, listed[tp])
                    result[tp] = max(hw, int(listed[tp]))
            if not waiting:
                break
        if waiting:
            log.warning("could not verify end offsets of %s", sorted(waiting))
    finally:
        await probe.stop()
    return result
