"""The search as the user watches it: a live bar (trials done of all, best score so far,
failures) and one line per finished trial, which is all a log file or a pipe gets."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sentiment_mlops.tuning.search import TrialResult


class SearchProgress:
    """A context manager; `update` with each trial as it finishes."""

    def __init__(self, console: Console, total: int, metric: str) -> None:
        self._console = console
        self._metric = metric
        self._best: TrialResult | None = None
        self._failed = 0
        self._progress = Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}  {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task("search", total=total, best="", failed="")

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, result: TrialResult) -> None:
        if result.ok:
            if self._best is None or result.mean > self._best.mean:
                self._best = result
            line = (
                f"trial {result.number}: {self._metric} {result.mean:.4f} ± {result.std:.4f} "
                f"({', '.join(result.workers)})  {_overrides(result)}"
            )
        else:
            self._failed += 1
            line = (
                f"trial {result.number}: [red]failed[/]: {escape(result.error or '')}  "
                f"{_overrides(result)}"
            )
        self._console.print(line, highlight=False, soft_wrap=True)
        best = (
            f"best {self._metric} {self._best.mean:.4f} (trial {self._best.number})"
            if self._best
            else ""
        )
        self._progress.update(
            self._task,
            advance=1,
            best=best,
            failed=f"[red]{self._failed} failed[/]" if self._failed else "",
        )


def _overrides(result: TrialResult) -> str:
    return escape(" ".join(f"{k}={v!r}" for k, v in result.trial.overrides.items()))
