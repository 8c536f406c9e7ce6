"""Prediction ids are UUIDv7: unique, ordered by time, and the time they were made can be read
back from them (the feedback endpoint tells "too old for the log" from "never existed")."""

from __future__ import annotations

import time
import uuid

from sentiment_mlops.serving.predictions import new_prediction_id, prediction_time_ms


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
