"""Random bytes for ids on the request path, read from the OS in blocks.

Each `os.urandom` is a system call that releases the GIL; a thread that wants the GIL (the
prediction log's writer, a batch being scored) can then keep the event loop waiting for up
to the interpreter's switch interval (5 ms). With one call per prediction id, a loaded worker
spent a third of a 256-text batch in them. `random_bytes` hands out slices of one
`os.urandom(4096)` instead, so ids stay as unpredictable as before (the same source) at one
system call per ~400 ids. A forked child drops the block it inherited, so two processes never
hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

BLOCK_BYTES = 4096

_lock = threading.Lock()
_block = b""
_used = 0


def random_bytes(count: int) -> bytes:
    """`count` bytes from the OS's random source, never given out twice."""
    global _block, _used
    with _lock:
        if _used + count > len(_block):
            _block, _used = os.urandom(max(BLOCK_BYTES, count)), 0
        taken = _block[_used : _used + count]
        _used += count
        return taken


def _forget_block() -> None:
    global _block, _used
    _block, _used = b"", 0


os.register_at_fork(after_in_child=_forget_block)
