"""How hard `POST /token` may be pushed: a lockout after failed secrets, and a bound on how many
secret checks run at once.

A secret check is scrypt: about 30 ms of CPU and 16 MiB of memory. Unbounded, a flood of wrong
secrets (40 threads) ran 40 checks at once in the shared thread pool: `/predict` p50 was reported
going from 5 ms to 271 ms, and the server grew by ~600 MiB that it never gave back (the C
allocator keeps each thread's 16 MiB for reuse). So:

- Failures (unknown client or wrong secret) are counted per client id and per source address
  in a moving window (`limits`, in memory: per worker process). When either count is full,
  attempts are refused without a check, even with the right secret, until the oldest failure
  leaves the window: a lockout. The count is checked on arrival and again when a waiting
  attempt's turn comes, and a failure is counted as soon as its check ends, so at most
  `concurrent - 1` checks beyond the limit (those already running) can still fail. Successes are
  not counted, so a client that knows its secret is never throttled by its own use.
- At most `concurrent` checks run at once, in this throttle's own threads (not the pool other
  work uses), so the memory checks take grows with `concurrent`, not with the number of
  attackers (measured: +65 MiB with 2 threads under that flood); at most `queued` more wait,
  and beyond that an attempt is refused at once instead of queueing without end.

No HTTP here: `serving.auth` turns refusals into responses.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sentiment_mlops.config import Settings

T = TypeVar("T")
THREAD_NAME_PREFIX = "token-secret-check"
# Client ids are at most 128 characters (`clients.add_client`); longer unknown ones are cut so a
# flood of huge ids cannot grow the failure records.
_MAX_KEY_CHARS = 128


class ChecksBusy(Exception):
    """As many secret checks as allowed are running or waiting; retry shortly."""


class LockedOut(Exception):
    """Too many failures for the client id or the address; no check was made."""

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"too many failed attempts for this {limit}; retry in {retry_after} s")
        self.limit = limit  # "client id" or "address"
        self.retry_after = retry_after


class TokenThrottle:
    """Failure lockout per client id and per address, and bounded concurrent secret checks."""

    def __init__(
        self,
        *,
        failures_per_client: int,
        failures_per_address: int,
        window_seconds: int,
        concurrent: int,
        queued: int,
    ) -> None:
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._per_client = RateLimitItemPerSecond(failures_per_client, window_seconds, "client")
        self._per_address = RateLimitItemPerSecond(failures_per_address, window_seconds, "address")
        self._capacity = concurrent + queued
        self._admitted = 0  # checks running or waiting; only touched on the event loop
        self._executor = ThreadPoolExecutor(concurrent, thread_name_prefix=THREAD_NAME_PREFIX)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenThrottle:
        return cls(
            failures_per_client=settings.token_failures_per_client,
            failures_per_address=settings.token_failures_per_address,
            window_seconds=settings.token_failure_window_seconds,
            concurrent=settings.token_checks_concurrent,
            queued=settings.token_checks_queued,
        )

    async def check(
        self, client_id: str, address: str, secret_check: Callable[[], T | None]
    ) -> T | None:
        """The result of `secret_check` (None: a failure, counted), run in one of this
        throttle's threads. `LockedOut` if a failure limit is full, on arrival or when the
        attempt's turn comes; `ChecksBusy` at once if `concurrent + queued` are admitted."""
        self._refuse_if_locked_out(client_id, address)
        if self._admitted >= self._capacity:
            raise ChecksBusy(f"{self._admitted} secret checks are running or waiting")

        def counted_check() -> T | None:
            self._refuse_if_locked_out(client_id, address)
            result = secret_check()
            if result is None:
                for item, key in self._buckets(client_id, address).values():
                    self._limiter.hit(item, key)
            return result

        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, counted_check)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        """Stop the check threads (waiting checks are cancelled) and forget the failures."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._storage.reset()

    def _refuse_if_locked_out(self, client_id: str, address: str) -> None:
        for limit, (item, key) in self._buckets(client_id, address).items():
            if not self._limiter.test(item, key):
                reset_at = self._limiter.get_window_stats(item, key).reset_time
                raise LockedOut(limit, max(1, math.ceil(reset_at - time.time())))

    def _buckets(
        self, client_id: str, address: str
    ) -> dict[str, tuple[RateLimitItemPerSecond, str]]:
        return {
            "client id": (self._per_client, client_id[:_MAX_KEY_CHARS]),
            "address": (self._per_address, address),
        }
