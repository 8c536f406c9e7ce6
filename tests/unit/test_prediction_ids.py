"""Prediction ids are UUIDv7: unique, ordered by time, and the time they were made can be read
back from them (the feedback endpoint tells "too old for the log" from "never existed")."""

from __future__ import annotations

import os
import time
import uuid

from sentiment_mlops.serving.predictions import new_prediction_id, prediction_time_ms
from sentiment_mlops.serving.random_bytes import BLOCK_BYTES, random_bytes


def test_ids_are_version_7_and_carry_their_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_prediction_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(made)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    stamp = prediction_time_ms(made)
    assert stamp is not None and before <= stamp <= after


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    ids = [new_prediction_id(now_ms=1_700_000_000_000 + k) for k in range(100)]
    assert ids == sorted(ids)
    assert len({new_prediction_id() for _ in range(10_000)}) == 10_000


def test_other_ids_have_no_time() -> None:
    assert prediction_time_ms(str(uuid.uuid4())) is None
    assert prediction_time_ms("not-an-id") is None


def test_ids_format_as_uuid_does() -> None:
    for _ in range(1_000):
        made = new_prediction_id()
        assert str(uuid.UUID(made)) == made


def test_random_bytes_are_never_handed_out_twice_even_across_a_fork() -> None:
    """The block read from the OS is sliced, and a forked child does not reuse the parent's
    block: the child's next bytes differ from the parent's next bytes."""
    taken = [random_bytes(10) for _ in range(2 * BLOCK_BYTES // 10)]  # spans a refill
    assert len(set(taken)) == len(taken)
    assert len(random_bytes(BLOCK_BYTES + 1)) == BLOCK_BYTES + 1
    random_bytes(1)  # a fresh block, with bytes left in it for the fork to inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next bytes and leave at once
        os.write(write, random_bytes(16))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 16)
    os.close(read)
    assert len(child) == 16 and child != random_bytes(16)
