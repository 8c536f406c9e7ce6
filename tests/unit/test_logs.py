"""The JSON log handler: every line is written, and on the event loop's thread the stream is
flushed once per loop turn instead of once per line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import threading
from datetime import UTC, datetime

import pytest

from sentiment_mlops.serving.logs import JsonFormatter, LoopFlushedHandler


class CountingStream(io.StringIO):
    """A stream that counts flushes and keeps what each flush made visible."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.visible = ""

    def flush(self) -> None:
        self.flushes += 1
        self.visible = self.getvalue()


def logger_to(stream: CountingStream) -> logging.Logger:
    logger = logging.getLogger(f"test_logs.{id(stream)}")
    handler = LoopFlushedHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_of_one_loop_turn_are_flushed_together_at_its_end() -> None:
    stream = CountingStream()
    logger = logger_to(stream)

    async def turn() -> tuple[int, int]:
        for i in range(5):
            logger.info("request", extra={"n": i})
        flushed_during = stream.flushes
        await asyncio.sleep(0)  # the loop's next turn
        return flushed_during, stream.flushes

    during, after = asyncio.run(turn())
    assert (during, after) == (0, 1)
    lines = [json.loads(line) for line in stream.visible.splitlines()]
    assert [line["n"] for line in lines] == [0, 1, 2, 3, 4]


def test_lines_from_outside_a_loop_are_flushed_at_once() -> None:
    stream = CountingStream()
    logger = logger_to(stream)
    logger.info("no loop here")
    assert stream.flushes == 1 and "no loop here" in stream.visible
    thread = threading.Thread(target=logger.warning, args=("from a thread",))
    thread.start()
    thread.join()
    assert stream.flushes == 2 and "from a thread" in stream.visible


@pytest.mark.parametrize("fraction", [0.0, 0.0004999, 0.0005, 0.9994999, 0.9995, 0.9999995, 0.5])
def test_the_timestamp_is_datetimes_own_to_the_millisecond(fraction: float) -> None:
    """Formatted once per second and reused, it still reads as `isoformat` would, rounding to
    the microsecond first (so 0.9999995 s is the next second)."""
    formatter = JsonFormatter()
    rng = random.Random(7)
    for _ in range(2_000):
        created = rng.randrange(1_700_000_000, 1_800_000_000) + fraction
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        record = logging.makeLogRecord({"created": created, "msg": "m"})
        assert json.loads(formatter.format(record))["ts"] == expected, created
