"""make_app(service, settings) -> faust.App, with the settings every service shares."""

from __future__ import annotations

import logging
from datetime import timedelta

import faust
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

from agents import consumer
from apps import compat
from apps.security import aiokafka_auth, faust_credentials
from apps.settings import Settings

log = logging.getLogger(__name__)


def make_app(service: str, settings: Settings) -> faust.App:
    compat.configure(
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        verify_end_offsets=settings.verify_end_offsets,
        auth=aiokafka_auth(settings),
    )
    port = settings.port_for(service)
    (settings.data_dir / service).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        service,  # the app id is the service name: it names the group and the changelogs
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir / service),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_request_timeout=max(30.0, settings.session_timeout_s * 2),
        consumer_max_fetch_size=1024**2,
        # Records handed to the streams per poll. A poll is delivered whole,
        # also for partitions paused meanwhile: unbounded, one poll could hold
        # a megabyte of every partition fetched.
        broker_max_poll_records=500,
        producer_acks=-1,
        # A batch's messages to one partition go out as one record batch
        # (agents/output.py, send_many): room for a few hundred results.
        producer_max_batch_size=256 * 1024,
        producer_linger=settings.producer_linger_ms / 1000.0,
        stream_wait_empty=False,
        table_standby_replicas=settings.standby_replicas,
        table_cleanup_interval=timedelta(minutes=10),
        web_enabled=True,
        web_port=port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        canonical_url=f"http://{settings.web_host}:{port}",
        web_in_thread=False,
        worker_redirect_stdouts=False,
        logging_config=None,
    )
    # One registry per app, so two apps in a test process do not collide.
    registry = app.prometheus_registry = CollectorRegistry(auto_describe=True)  # type: ignore[attr-defined]
    # What the process costs: CPU, memory and the cycle collector (apps/cli.py tune_gc).
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    consumer.install(app)
    return app


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Bound RocksDB's memory per table partition.

    Faust's defaults are a 2 GiB block cache and up to three 64 MiB memtables
    per table per partition: a table smaller than that lives wholly in memory.
    """
    return {
        "block_cache_size": settings.block_cache_mb * 1024**2,
        "write_buffer_size": settings.write_buffer_mb * 1024**2,
        "max_write_buffer_number": 2,
    }


def raw_table(app: faust.App, settings: Settings, name: str) -> faust.Table:
    """A changelog-backed table of raw bytes keyed by the UTF-8 source message key.

    Keys and values are raw so that the router hashes the same bytes the
    producer partitioned by; values are orjson documents we encode ourselves.
    """
    return app.Table(
        name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=rocksdb_options(settings),
    )
