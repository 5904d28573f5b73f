"""Output.send_many partitions keys itself: it must pick what the producer would."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from agents.output import murmur2, partition_for


def test_murmur2_equals_aiokafkas_for_every_length_and_byte():
    rng = random.Random(5)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(64) for _ in range(40)]
    keys += [b"", b"\x00", b"\xff" * 7, b"acct-0001", "café-ü".encode()]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_partition_for_equals_the_default_partitioner_also_for_a_key_seen_before():
    rng = random.Random(11)
    partitioner = DefaultPartitioner()
    for partitions in (1, 2, 3, 4, 12):
        everything = list(range(partitions))
        for i in range(500):
            key = f"acct-{rng.randrange(10**6):06d}-{i % 7}".encode()
            expected = partitioner(key, everything, everything)
            assert partition_for(key, partitions) == expected
            assert partition_for(key, partitions) == expected  # now from the cache
