"""`riskstream rebuild SERVICE|all`: wipe a service's state and recompute it from its input.

Steps, for each service named:
1. its consumer group must be empty (every `riskstream worker SERVICE` stopped);
2. its changelog topics are deleted and created again, empty;
3. its group's committed offsets are set to the earliest retained offset of
   every topic it consumes;
4. its local data dir (RISKSTREAM_DATA_DIR/<service>) is deleted.
Started again, the workers read their input from the start and rebuild every
table. Every step of the pipeline is idempotent per transaction, so what the
rebuilt service sends again changes nothing downstream that was already right.
Run the decision service with RISKSTREAM_DECISION_MODE=wait_for_all while it
catches up, so old requests are not decided on a deadline that passed long ago.
Workers on other machines keep their own data dirs: empty those too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from agents import topics
from apps.security import aiokafka_auth
from apps.settings import Settings

log = logging.getLogger(__name__)


class RebuildError(RuntimeError):
    pass


async def rebuild(
    settings: Settings,
    services: list[str],
    *,
    wait_empty_s: float = 30.0,
    force: bool = False,
    say=print,
) -> None:
    """`force` skips the empty-group check, for a broker that reports members
    that have left (the embedded one does) when you know the workers are stopped."""
    auth = aiokafka_auth(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **auth)
    await admin.start()
    try:
        for service in services:
            if not force:
                await _wait_group_empty(admin, service, wait_empty_s)
        for service in services:
            changelogs = [topics.changelog_topic(service, t) for t in topics.TABLES[service]]
            await _recreate_empty(admin, settings, changelogs)
            say(f"{service}: changelogs emptied: {', '.join(changelogs)}")
            reset = await _rewind_group(settings, service, auth)
            say(f"{service}: offsets of group {service!r} rewound on {reset} partitions")
            local = settings.data_dir / service
            shutil.rmtree(local, ignore_errors=True)
            say(f"{service}: local state {local} deleted")
    finally:
        await admin.close()


async def _wait_group_empty(admin: AIOKafkaAdminClient, group: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        [described] = await admin.describe_consumer_groups([group])
        [(error, _, state, _, _, members)] = described.groups
        if not members or state in ("Empty", "Dead"):
            return
        if time.monotonic() > deadline:
            raise RebuildError(
                f"consumer group {group!r} still has {len(members)} member(s) ({state}): "
                f"stop every `riskstream worker {group}` first"
            )
        await asyncio.sleep(1.0)


async def _recreate_empty(admin: AIOKafkaAdminClient, settings: Settings, names: list[str]) -> None:
    existing = set(await admin.list_topics())
    doomed = [n for n in names if n in existing]
    if doomed:
        await admin.delete_topics(doomed)
    for _ in range(50):  # deletion completes asynchronously on a real cluster
        if not set(await admin.list_topics()) & set(doomed):
            break
        await asyncio.sleep(0.2)
    await admin.create_topics(
        [
            NewTopic(
                n,
                settings.partitions,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            for n in names
        ]
    )


class _TakeEverything(AbstractPartitionAssignor):
    """Joins under Faust's protocol name and gives every member every partition.

    Only this client is alive in the group (checked before, or promised with
    --force), so it ends up owning all partitions and may commit them; members
    a broker still lists after they left never act on what they are given.
    """

    name = "faust"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        wanted = {t for m in members.values() for t in m.subscription}
        layout = sorted((t, sorted(cluster.partitions_for_topic(t) or ())) for t in wanted)
        return {mid: ConsumerProtocolMemberAssignment(cls.version, layout, b"") for mid in members}

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


async def _rewind_group(settings: Settings, group: str, auth: dict) -> int:
    """Commit the earliest offsets of every input partition as a member of the group."""
    consumer = AIOKafkaConsumer(
        *topics.SOURCES[group],
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        partition_assignment_strategy=[_TakeEverything],
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        **auth,
    )
    await consumer.start()
    try:
        for _ in range(240):
            if consumer.assignment():
                break
            await consumer.getmany(timeout_ms=250)
        tps = sorted(consumer.assignment())
        if not tps:
            raise RebuildError(f"could not join consumer group {group!r} to rewind it")
        earliest = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: earliest[tp] for tp in tps})
        return len(tps)
    finally:
        await consumer.stop()
