"""Loading a model version in a child process, so that a hot swap does not stall serving.

Downloading, hashing, deserialising (skops), compiling and warming up a version is about a
second of Python that holds the GIL. In a thread of the serving process it starved the event
loop: p99 rose from tens of milliseconds to half a second during every swap
(benchmarks/hot_swap.py). `load_in_child` runs `models.load_here` in a new interpreter
(`python -m sentiment_mlops.serving.loader`) and receives only the result: the compiled
scorer, about 1.6 MB for the built-in model, unpickled here in milliseconds.

- The request (the source and the version) goes to the child's stdin as a pickle; the
  source must pickle (`Registry` pickles as its settings). The answer comes back on the
  child's original stdout; anything else the child prints goes to its stderr, which is the
  server's.
- The artifact is verified in the child, by the same code as in process (sha256, then
  skops's trusted types). What comes back over the pipe is the pickle our own child wrote.
- A failure in the child comes back as the same exception type where it pickles, else as a
  `LoadFailed` (a `ConnectionError` stays a `ConnectionError`, so "registry unreachable" is
  still told apart from a refused version). A child that dies without answering, or that
  runs past `hard_limit_seconds`, is a `LoadFailed` too, and is killed.
- A fresh interpreter per load costs about 3.5 s of CPU (imports), at a lower priority
  (`CHILD_NICENESS`) so that on a busy machine the swap waits rather than the requests; no
  process is left holding memory between swaps. The pool waits for it up to
  `SENTIMENT_MODEL_LOAD_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # the child lowers its priority before it imports numpy, sklearn, mlflow
    from sentiment_mlops.serving.models import ModelSource, PreparedModel

# How much the child yields the CPU to the server (os.nice): on a busy machine the swap takes
# longer rather than the requests, but not unboundedly. At 10 the child's share is a tenth of
# a normal process's: with CPU hogs beside a loaded server a load took over 120 s and timed
# out, again at every poll, and a promotion never served. At 5 it is a third, and a swap costs
# p99 about 2x steady instead of 1.3x (README, benchmarks/hot_swap.py).
CHILD_NICENESS = 5

# The longest a child may run. The pool's load timeout (SENTIMENT_MODEL_LOAD_TIMEOUT_SECONDS)
# answers the caller much sooner, and the load is then let run as "slow" until this limit;
# it bounds a child stuck on a frozen database, and how late a promotion can serve.
HARD_LIMIT_SECONDS = 300.0


class LoadFailed(RuntimeError):
    """The child could not load the version, or died or overran without saying why."""


class LoadUnreachable(ConnectionError):
    """The child could not reach the registry (its own exception did not pickle)."""


def load_in_child(source: ModelSource, version: int) -> PreparedModel:
    """`load_here(source, version)`, run in a new Python process; blocks until it answers."""
    from sentiment_mlops.serving.models import PreparedModel

    request = pickle.dumps((source, version))
    child = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        answer, _ = child.communicate(request, timeout=HARD_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise LoadFailed(
            f"model loader process ran past {HARD_LIMIT_SECONDS:g} s loading version "
            f"{version} and was killed"
        ) from None
    if child.returncode != 0 or not answer:
        raise LoadFailed(
            f"model loader process exited with {_exit_status(child.returncode)} before "
            f"answering for version {version}"
        )
    status, value = pickle.loads(answer)
    if status == "error":
        raise value
    if not isinstance(value, PreparedModel):
        raise LoadFailed(f"model loader process answered {type(value).__name__}")
    return value


def _exit_status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def _portable(exc: Exception) -> Exception:
    """`exc` if it survives a pickle round trip, else one of ours with the same message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any exception type that cannot be rebuilt from its pickle
        message = f"{type(exc).__name__}: {exc}"
        return LoadUnreachable(message) if isinstance(exc, ConnectionError) else LoadFailed(message)
    return exc


def _serve_one(requests: BinaryIO, answers: BinaryIO) -> None:
    """Read one request, load it, write one answer: the child's whole life."""
    from sentiment_mlops.serving.models import load_here

    source, version = pickle.load(requests)
    try:
        answer: tuple[str, object] = ("ok", load_here(source, version))
    except Exception as exc:  # every failure is reported to the parent, which decides
        answer = ("error", _portable(exc))
    pickle.dump(answer, answers)
    answers.flush()


def main() -> None:
    from sentiment_mlops.runtime import configure_process

    os.nice(CHILD_NICENESS)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt it
    configure_process()
    _serve_one(sys.stdin.buffer, answers)


if __name__ == "__main__":
    # Through the package, so the exceptions pickled back are named for the parent to find.
    from sentiment_mlops.serving.loader import main as run

    run()
