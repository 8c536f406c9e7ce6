"""Cross-validate every trial on a Dask cluster, sharing the stages trials have in common.

The graph (`work.py` says what each stage computes and why sharing it is safe):

    corpus (scattered once) ─► preprocess[key] ─► features[fold, key] ─► score[trial, fold]
    folds  (scattered once) ──────────────────────┘

The corpus and the folds' row numbers go to every worker once (`broadcast`). Everything
downstream is a task Dask can recompute when the worker holding its result dies. Scattered
data has no recipe, though, and Dask's active memory manager drops the extra copies once no
task waits for them: if the worker holding the last copy dies while a task still needs it,
the scheduler forgets the tasks that depend on it and their futures come back cancelled. The
search then scatters the data again and resubmits those scores (`MAX_RESUBMITS` times).

Only the corpus, the folds and the unfinished scores are referenced here, so
a stage's result is freed as soon as the last score that needs it is done; scores are
submitted grouped by their features, so few feature matrices are alive at once.

Results come back as each score finishes (`as_completed`): a trial is reported the moment its
last fold is in, and what the client holds is never lost with a worker. A worker that dies
mid-task has its tasks rescheduled on the others by the scheduler (up to
`distributed.scheduler.allowed-failures` times, after which the trial is recorded as failed
with `KilledWorker`); `retries` re-runs a task that raised an unexpected error (out of
memory, say), while the errors of a bad parameter combination come back as values, recorded
once. On any interruption (Ctrl-C) every unfinished task is cancelled before re-raising.
"""

from __future__ import annotations

import hashlib
import signal
import statistics
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from sklearn.model_selection import StratifiedKFold

from sentiment_mlops.config import TrainConfig
from sentiment_mlops.data import DataError, LabelledTexts
from sentiment_mlops.tuning import work
from sentiment_mlops.tuning.space import Trial, TuneConfig

if TYPE_CHECKING:
    from distributed import Client, Future

# Re-runs of a task that raised an unexpected error (not a parameter error: those are values).
TASK_RETRIES = 2
# Times a score whose input data was lost with a worker is submitted again, with the data
# scattered again (see the module docstring).
MAX_RESUBMITS = 3


class TuneError(RuntimeError):
    """The search cannot go on or gave nothing to register; the message says why."""


@dataclass(frozen=True)
class TrialResult:
    """A trial's cross-validation: a score per fold, or the error that stopped it."""

    trial: Trial
    metric: str
    scores: list[float]
    seconds: float  # classifier fitting and scoring, summed over folds (stages are shared)
    workers: list[str]
    error: str | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.scores)

    @property
    def params(self) -> dict[str, Any]:
        """The trial's whole training config as dotted parameters, or the values it tried
        when they made no valid config."""
        if self.trial.config is None:
            return dict(self.trial.overrides)
        return self.trial.config.flat_params()

    @property
    def metrics(self) -> dict[str, float]:
        if not self.ok:
            return {}
        return {
            f"cv_{self.metric}_mean": self.mean,
            f"cv_{self.metric}_std": self.std,
            "fit_seconds": self.seconds,
            **{f"cv_{self.metric}_fold{i}": s for i, s in enumerate(self.scores, start=1)},
        }

    @property
    def tags(self) -> dict[str, str]:
        tags = {"trial": str(self.number), "worker": ", ".join(self.workers) or "none"}
        if self.error is not None:
            tags["error"] = self.error
        return tags


def check_folds(data: LabelledTexts, folds: int) -> None:
    """DataError unless every class has a row for each of `folds` folds (checked by the CLI
    before the store is opened, and by `make_folds`)."""
    counts: dict[str, int] = defaultdict(int)
    for label in data.labels:
        counts[label] += 1
    rare = sorted(label for label, n in counts.items() if n < folds)
    if rare:
        raise DataError(
            f"{data.source}: {folds}-fold cross-validation needs at least {folds} rows of "
            f"each class; too few of: {', '.join(rare)} (lower folds in the tune config)"
        )


def make_folds(data: LabelledTexts, folds: int, seed: int) -> list[work.Fold]:
    """Stratified folds of the training rows; DataError if a class has too few rows."""
    check_folds(data, folds)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        work.Fold(number, train, validation)
        for number, (train, validation) in enumerate(
            splitter.split(data.texts, data.labels), start=1
        )
    ]


def best_trial(results: list[TrialResult]) -> TrialResult:
    """The trial with the highest mean score (the lowest number among equals); TuneError
    when every trial failed."""
    finished = [r for r in results if r.ok]
    if not finished:
        first = min(results, key=lambda r: r.number)
        raise TuneError(f"every trial failed; trial {first.number}: {first.error}")
    return max(finished, key=lambda r: (r.mean, -r.number))


def run_search(
    client: Client,
    data: LabelledTexts,
    trials: list[Trial],
    config: TuneConfig,
    *,
    share: bool = True,
    on_result: Callable[[TrialResult], None] | None = None,
    stop: threading.Event | None = None,
) -> list[TrialResult]:
    """Cross-validate `trials` on `data` over `client`'s workers; results by trial number.

    `on_result` is called in this thread with each trial as it finishes (the CLI logs it
    and moves the progress bar). `share=False` gives every trial stages of its own: the
    same numbers, computed once per trial (the benchmark's baseline). When `stop` is set
    (`stop_on_interrupt`: Ctrl-C or SIGTERM), the unfinished tasks are cancelled and
    KeyboardInterrupt raised.
    """
    from distributed import as_completed

    report = on_result or (lambda result: None)
    stop = stop or threading.Event()
    folds = make_folds(data, config.folds, config.seed)
    results: dict[int, TrialResult] = {}
    for trial in trials:
        if trial.config is None:
            results[trial.number] = TrialResult(trial, config.metric, [], 0.0, [], trial.error)
            report(results[trial.number])
    runnable = [t for t in trials if t.config is not None]
    if not runnable:
        return [results[n] for n in sorted(results)]

    search = uuid.uuid4().hex[:8]
    planned = plan(runnable, len(folds), share=share)
    corpus = work.Corpus.of(data.texts, data.labels)
    # Held for the whole search: scattered data that no client holds is dropped once no task
    # waits for it, and then nothing lost with a worker could be recomputed from it.
    scattered = [_scatter(client, corpus, folds)]
    pending = _submit(client, search, scattered[0], planned, config.metric)
    scores: dict[int, list[work.FoldScore]] = defaultdict(list)
    by_number = {t.number: t for t in runnable}
    finished = as_completed(
        [future for future, _, _ in pending.values()], with_results=True, raise_errors=False
    )
    resubmitted: dict[tuple[int, int], int] = defaultdict(int)
    try:
        while not finished.is_empty():
            if stop.is_set():
                raise KeyboardInterrupt
            batch = finished.next_batch(block=False)
            if not batch:
                stop.wait(0.05)  # polled, not blocking in Dask, so that `stop` is seen at once
            lost: set[tuple[int, int]] = set()
            for future, outcome in batch:
                _, trial_number, fold = pending.pop(future.key)
                # Judged by the outcome, not `future.status`: a result already received can
                # be "lost" by then, with the worker that held it.
                if isinstance(outcome, CancelledError) and (
                    resubmitted[trial_number, fold] < MAX_RESUBMITS
                ):
                    resubmitted[trial_number, fold] += 1
                    lost.add((trial_number, fold))
                    continue
                if not isinstance(outcome, work.FoldScore):  # the task itself failed
                    outcome = work.FoldScore(
                        trial_number, fold, None, 0.0, "", _task_error(outcome)
                    )
                scores[trial_number].append(outcome)
                if len(scores[trial_number]) == len(folds):
                    result = _trial_result(
                        by_number[trial_number], config, scores.pop(trial_number)
                    )
                    results[trial_number] = result
                    report(result)
            if lost:
                again = [p for p in planned if (p.trial.number, p.fold) in lost]
                scattered.append(_scatter(client, corpus, folds))
                more = _submit(
                    client, f"{search}-{uuid.uuid4().hex[:8]}", scattered[-1], again, config.metric
                )
                pending.update(more)
                finished.update(future for future, _, _ in more.values())
    except BaseException:
        client.cancel([future for future, _, _ in pending.values()])
        raise
    return [results[n] for n in sorted(results)]


def _config(trial: Trial) -> TrainConfig:
    """A runnable trial's config (the planner only sees those)."""
    assert trial.config is not None
    return trial.config


@dataclass(frozen=True)
class PlannedScore:
    """One (trial, fold) score task and the names of the stage tasks it depends on: scores
    with equal names share those tasks."""

    trial: Trial
    fold: int
    preprocess: str
    features: str


def plan(trials: list[Trial], folds: int, *, share: bool = True) -> list[PlannedScore]:
    """The score tasks of `trials` (runnable ones) in submission order: grouped by features,
    so that each group's feature matrices can be freed before the next group's are made.
    Without `share`, each trial's stage names are its own."""
    ordered = sorted(trials, key=lambda t: work.features_key(_config(t)))
    planned: list[PlannedScore] = []
    for trial in ordered:
        own = "" if share else f"trial{trial.number}"
        prep = _digest(own + work.preprocessing_key(_config(trial)))
        feat = _digest(own + work.features_key(_config(trial)))
        planned.extend(
            PlannedScore(trial, fold, f"preprocess-{prep}", f"features-fold{fold}-{feat}")
            for fold in range(1, folds + 1)
        )
    return planned


def _scatter(
    client: Client, corpus: work.Corpus, folds: list[work.Fold]
) -> tuple[Future, list[Future]]:
    """The corpus and the folds on every worker, under keys of this call's own."""
    return (
        client.scatter(corpus, broadcast=True, hash=False),
        client.scatter(folds, broadcast=True, hash=False),
    )


def _submit(
    client: Client,
    search: str,
    data: tuple[Future, list[Future]],
    planned: list[PlannedScore],
    metric: work.Metric,
) -> dict[Any, tuple[Future, int, int]]:
    """Submit every stage and score; by key, each score's future, trial and fold.

    Stage futures live in a local dict only while submitting: scores naming the same stage
    get the same future; afterwards the scores alone hold them (see the module docstring).
    """
    corpus, folds = data
    stages: dict[str, Future] = {}
    pending: dict[Any, tuple[Future, int, int]] = {}
    for score in planned:
        config = _config(score.trial)
        if score.preprocess not in stages:
            stages[score.preprocess] = client.submit(
                work.preprocess,
                corpus,
                config,
                key=f"{score.preprocess}-{search}",
                retries=TASK_RETRIES,
            )
        if score.features not in stages:
            stages[score.features] = client.submit(
                work.featurize,
                stages[score.preprocess],
                folds[score.fold - 1],
                config,
                key=f"{score.features}-{search}",
                retries=TASK_RETRIES,
            )
        future = client.submit(
            work.score_fold,
            stages[score.features],
            config,
            score.trial.number,
            score.fold,
            metric,
            key=f"score-trial{score.trial.number}-fold{score.fold}-{search}",
            retries=TASK_RETRIES,
        )
        pending[future.key] = (future, score.trial.number, score.fold)
    return pending


def _trial_result(trial: Trial, config: TuneConfig, scores: list[work.FoldScore]) -> TrialResult:
    scores = sorted(scores, key=lambda s: s.fold)
    workers = sorted({s.worker for s in scores if s.worker})
    seconds = sum(s.seconds for s in scores)
    errors = [s.error for s in scores if s.error is not None]
    if errors:
        return TrialResult(trial, config.metric, [], seconds, workers, errors[0])
    return TrialResult(
        trial, config.metric, [s.score for s in scores if s.score is not None], seconds, workers
    )


def _task_error(outcome: Any) -> str:
    """What a failed task's outcome says: as_completed gives (type, exception, traceback),
    or the CancelledError of a task cancelled too often."""
    error = outcome[1] if isinstance(outcome, tuple) and len(outcome) == 3 else outcome
    return f"{type(error).__name__}: {error}"


class StopRequest(threading.Event):
    """Set when SIGINT or SIGTERM arrives during a search; `signum` says which."""

    signum: int | None = None


@contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """An event that Ctrl-C (SIGINT) or SIGTERM sets while the block runs, for
    `run_search(stop=...)`.

    Python raises a signal handler's exception wherever the main thread happens to be. Inside
    a `__del__` or a weakref callback (Dask futures, SQLAlchemy and MLflow objects are released
    all the time here) it is printed and dropped: about one Ctrl-C in three was lost that way
    in a search. Between a lock's acquire and the `with` block that releases it, it leaves the
    lock held: a SIGTERM raised as an exception there left Dask's event loop waiting on a
    queue's lock and the process hung as it closed the cluster. A flag the search checks can
    be neither lost nor caught half-way. A second signal acts as usual (KeyboardInterrupt, or
    the previous SIGTERM handler). Outside the main thread (where no signal arrives) the
    event is never set.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        stop.signum = signum
        stop.set()
        restore()

    for number in previous:
        signal.signal(number, interrupted)
    try:
        yield stop
    finally:
        restore()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]
