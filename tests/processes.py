"""The processes a test run started and left running: found from /proc at the end of the run,
so a server a test forgot to stop (on a skip, a failure or a timeout) fails the run instead of
living on after it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

# Children a library keeps for the life of this process and ends with it: multiprocessing's
# resource tracker exits when its pipe from this process closes.
LIBRARY_HELPERS = (b"resource_tracker",)


def children(pid: int) -> list[int]:
    """`pid`'s child processes, from every thread of it (Linux's /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before their children."""
    below, queue = [], children(pid)
    while queue:
        child = queue.pop(0)
        below.append(child)
        queue += children(child)
    return below


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def shut_down_library_pools() -> None:
    """joblib keeps a reusable pool of loky workers after a fit with `n_jobs` > 1; it is the
    library's, not a test's, and is shut down here before anything is counted."""
    loky = sys.modules.get("joblib.externals.loky")
    if loky is not None:
        loky.get_reusable_executor().shutdown(wait=True, kill_workers=True)


def _alive() -> dict[int, bytes]:
    """Live descendants but the library helpers, with their command lines."""
    found = {}
    for pid in descendants(os.getpid()):
        command = command_line(pid)
        if not is_zombie(pid) and not any(helper in command for helper in LIBRARY_HELPERS):
            found[pid] = command
    return found


def left_running(exiting_seconds: float = 10.0) -> list[str]:
    """Kill every live descendant of this process but the library helpers, and describe each
    one killed as `pid command line`. A process already on its way out (a child whose parent
    just stopped it, still releasing its memory) is given `exiting_seconds` to go first."""
    shut_down_library_pools()
    deadline = time.monotonic() + exiting_seconds
    alive = _alive()
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = _alive()
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"{pid} {command.decode(errors='replace')[:200]}" for pid, command in alive.items()]
