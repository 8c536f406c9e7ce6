"""The processes a test run started and left running: found from /proc at the end of the run,
so a server a test forgot to stop (on a skip, a failure or a timeout) fails the run instead of
living on after it."""

from __future__ import annotations

import os
import signal
import sys
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


def left_running() -> list[str]:
    """Kill every live descendant of this process but the library helpers, and describe each
    one killed as `pid command line`."""
    shut_down_library_pools()
    leftover = []
    for pid in descendants(os.getpid()):
        command = command_line(pid)
        if is_zombie(pid) or any(helper in command for helper in LIBRARY_HELPERS):
            continue
        leftover.append(f"{pid} {command.decode(errors='replace')[:200]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return leftover
