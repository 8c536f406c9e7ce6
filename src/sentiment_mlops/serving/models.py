"""The models a server holds, by alias, which one answers a request, and how a newly promoted
version or a new routing config replaces what serves.

The aliases are the ones the routing config names (serving/routing.py): the variants that
answer and the shadow. `answering` is the one place that decides which model answers: the
config's `Router` picks the variant, this pool holds its model. Each refresh reads the config
again; a new one takes effect only once every variant that gets users has a model and every
alias it names is set in the registry. Until then the one in effect keeps serving, and the
refusal is counted (`routing_reloads_total{result="refused"}`), logged once per reason, and
given in the `/admin/reload` answer. The very first config has nothing to keep and applies at
once; `/ready` says which of its models are still missing.

A new version is loaded, verified (hash and trusted types, in the registry), compiled and
warmed up off to the side; only then is the alias map replaced in one assignment. Requests
that already hold the old `ServingModel` finish with it. A version that fails any step is
refused, counted and logged, and the previous one keeps serving.

"Off to the side" is a `Loader`. `load_here` runs those steps in a thread of this process;
the server's `swap_loader` is `serving.loader.load_in_child`, a child process. The steps are
about a second of Python holding the GIL, which in a thread stalled the event loop while the
old version served (p99 0.5 s during a swap); the child hands back only the compiled scorer.
Until some version serves there is nothing to stall, and a child would only delay readiness
by its imports (~3 s of CPU), so a pool's first load runs in a thread.

The registry is another process's database and can be down, slow or frozen. Each call to it
runs in a thread of its own and is waited for at most `SENTIMENT_REGISTRY_TIMEOUT_SECONDS`
(a load, which also compiles, `SENTIMENT_MODEL_LOAD_TIMEOUT_SECONDS`);
"unreachable" and "timed out" are told apart from "alias not set" and from a refused version,
counted, and logged once each time they start or stop. Until an alias has a model, the
reason is kept for `/ready` and for the 503 answers.

A load that overran its timeout is not thrown away when it finishes: on a saturated machine a
loader slowed by the CPU, not by the registry, would otherwise be started again from scratch
at each poll and never finish in time. Its result is kept and serves at the next poll if the
alias still points at that version ("late model load kept" in the log). Such a load is "slow",
not a registry error: the registry answered the resolve just before, and the time goes to
fetching, verifying and compiling. It counts once in `model_reloads_total{result="slow"}`
("model load slow" in the log), the polls while it runs report "loading" without calling the
registry, and only past the loader's hard limit (`loader.HARD_LIMIT_SECONDS`, where a child is
killed) does it become a registry timeout. So a promotion serves within a poll interval, plus
the load however long the CPU makes it (at most the hard limit), plus one more interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from sentiment_mlops.config import ConfigError
from sentiment_mlops.model import LoadedModel
from sentiment_mlops.scorer import Scorer, make_scorer
from sentiment_mlops.serving.loader import HARD_LIMIT_SECONDS
from sentiment_mlops.serving.metrics import Metrics
from sentiment_mlops.serving.predictions import OVERRIDE_EXPERIMENT
from sentiment_mlops.serving.routing import Router, RoutingConfig

log = logging.getLogger("sentiment_mlops.serving.models")

T = TypeVar("T")

WARMUP_TEXTS = (
    "great service, thank you",
    "this was a terrible experience and I want a refund",
    "ok",
    "",
)

ReloadResultName = Literal[
    "loaded", "unchanged", "failed", "missing", "unreachable", "timeout", "loading"
]
RoutingResultName = Literal["applied", "unchanged", "refused"]
RegistryState = Literal["ok", "unreachable", "timeout", "error"]
_STATE_MESSAGES: dict[RegistryState, str] = {
    "ok": "model registry answers again",
    "unreachable": "model registry unreachable",
    "timeout": "model registry did not answer in time",
    "error": "model registry call failed",
}


class ModelSource(Protocol):
    """What the pool needs from the registry (so tests can hand it another store).

    `resolve` returns None when the alias is not set. Both raise a `ConnectionError` (the
    registry's `RegistryUnavailable` is one) when the store cannot be reached or does not
    answer; any other exception from `load` refuses that version.
    """

    def resolve(self, alias: str) -> int | None: ...

    def load(self, ref: str | int) -> LoadedModel: ...


@dataclass(frozen=True)
class PreparedModel:
    """A version loaded, verified, compiled and warmed up: all a pool needs to swap it in.

    `loaded_by` is the pid of the process that did the work and `seconds` how long it took.
    """

    version: int
    sha256: str
    run_id: str
    scorer: Scorer
    loaded_by: int
    seconds: float


Loader = Callable[[ModelSource, int], PreparedModel]


class ModelRejected(RuntimeError):
    """A loaded model does not behave like a probabilistic classifier."""


class NoModelLoaded(RuntimeError):
    """No verified model is loaded for the alias that should answer; the message says why."""


class UnknownVariant(ValueError):
    """A request asked for a variant the routing config does not name."""


class RegistryTimedOut(TimeoutError):
    """A registry call took longer than the timeout, or an earlier one has still not returned."""


class LoadOverdue(RuntimeError):
    """A load ran past its timeout and is still running: the registry answered (the alias
    resolved), and the time goes to fetching, verifying and compiling the version, which a
    saturated CPU slows. It is let run, up to the loader's hard limit, and not counted as a
    registry error."""


@dataclass(frozen=True)
class ServingModel:
    """One loaded, verified, compiled version, immutable so requests can share it freely."""

    alias: str
    version: int
    sha256: str
    run_id: str
    scorer: Scorer
    loaded_at: datetime

    @property
    def classes(self) -> list[str]:
        return self.scorer.classes


@dataclass(frozen=True)
class ReloadOutcome:
    alias: str
    version: int | None
    result: ReloadResultName
    error: str | None = None


@dataclass(frozen=True)
class RoutingOutcome:
    """What a refresh did with the routing config; `experiment` is the one in effect after it."""

    result: RoutingResultName
    experiment: str | None
    error: str | None = None


@dataclass(frozen=True)
class Refresh:
    """One refresh: the routing config's fate, and each alias's."""

    routing: RoutingOutcome
    models: list[ReloadOutcome]


@dataclass(frozen=True)
class Route:
    """Who answers one request: the experiment it counts in, the model that answers, and the
    shadow alias that scores it too (with its model, None while it has none)."""

    experiment: str
    model: ServingModel
    shadow: str | None = None
    shadow_model: ServingModel | None = None


@dataclass(frozen=True)
class _Overdue:
    """A registry call that overran the timeout and has not returned yet."""

    operation: str
    started: float
    future: asyncio.Future[Any]
    version: int | None = None  # a load's


def _warm_up(scorer: Scorer) -> None:
    """Score a few texts so the first request pays no first-call costs, and sanity-check.
    A model with entity features scores them with its defaults, as serving may."""
    entities = None
    if scorer.entity_features:
        entities = np.tile(
            np.asarray(scorer.entity_means, dtype=np.float64), (len(WARMUP_TEXTS), 1)
        )
    proba = scorer.predict_proba(list(WARMUP_TEXTS), entities)
    expected = (len(WARMUP_TEXTS), len(scorer.classes))
    if proba.shape != expected:
        raise ModelRejected(f"scorer returned shape {proba.shape}, expected {expected}")
    if not np.all(np.isfinite(proba)):
        raise ModelRejected("scorer returned probabilities that are not finite (NaN or inf)")
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
        raise ModelRejected("scorer probabilities do not sum to 1")


def load_here(source: ModelSource, version: int) -> PreparedModel:
    """Load, verify, compile and warm up `version` in the calling thread."""
    started = time.perf_counter()
    loaded = source.load(version)
    scorer = make_scorer(loaded.pipeline)
    _warm_up(scorer)
    return PreparedModel(
        version=loaded.version,
        sha256=loaded.sha256,
        run_id=loaded.run_id,
        scorer=scorer,
        loaded_by=os.getpid(),
        seconds=time.perf_counter() - started,
    )


class ModelPool:
    """Serving models by alias, swapped atomically when the registry moves an alias, and the
    routing config that decides which of them answers."""

    def __init__(
        self,
        source: ModelSource,
        routing: Callable[[], RoutingConfig],
        metrics: Metrics,
        *,
        timeout_seconds: float,
        load_timeout_seconds: float,
        swap_loader: Loader = load_here,
        before_serving: Callable[[Scorer], Awaitable[None]] | None = None,
    ) -> None:
        """`routing` reads the routing config, on every refresh; ConfigError if it is bad.
        `before_serving(scorer)` is awaited each time a loaded version is about to serve (the
        online features open the store for a model with entity features, so its first
        requests get the store's values, not defaults); it must not raise and must return
        in bounded time: the version serves once it has."""
        self._source = source
        self._before_serving = before_serving
        self._swap_loader = swap_loader
        self._read_routing = routing
        self._metrics = metrics
        self._timeouts = {"resolve": timeout_seconds, "load": load_timeout_seconds}
        self._models: dict[str, ServingModel] = {}
        self._router: Router | None = None
        self._pending: RoutingConfig | None = None  # a new config not yet in effect
        self._lock = asyncio.Lock()
        self.first_round = asyncio.Event()  # set when the first refresh ended, however it ended
        # Why an alias has no model yet, for /ready and 503 answers; kept up to date.
        self._waiting: dict[str, str] = {}
        self._no_routing = "reading the routing config"  # why no config is in effect yet
        self._refusal: str | None = None  # the last routing refusal logged
        self._states: dict[str, RegistryState] = {}
        self._overdue: dict[str, _Overdue] = {}
        # Loads that finished after their timeout, kept for the next poll: alias -> result.
        # Loads that finished after their timeout, for the next poll: alias -> (version, the
        # model, or the exception that refused it).
        self._late: dict[str, tuple[int | None, PreparedModel | BaseException]] = {}
        self._unset: set[str] = set()  # aliases last found not set, logged once until they are

    def get(self, alias: str) -> ServingModel | None:
        return self._models.get(alias)

    @property
    def routing(self) -> RoutingConfig | None:
        """The routing config in effect, None until the first one was read."""
        return self._router.config if self._router else None

    def answering(self, user: str | None, variant: str | None = None) -> Route:
        """Who answers a prediction request for `user`: the one place that decides it.

        The routing config's variant for `user` (at random without one), or `variant` if the
        caller may choose (an admin; the prediction is then outside the experiment). Without
        a model for it, NoModelLoaded says why: still looking, loading a version, the alias
        not set, the registry unreachable or not answering, the version refused, or no
        routing config yet. A variant the config does not name is an UnknownVariant.
        """
        router = self._router_in_effect()
        config = router.config
        if variant is None:
            alias, experiment = router.assign(user), config.experiment
        elif variant in config.aliases:
            alias, experiment = variant, OVERRIDE_EXPERIMENT
        else:
            raise UnknownVariant(
                f"variant '{variant}' is not in the routing config of experiment "
                f"'{config.experiment}'; it names {', '.join(config.aliases)}"
            )
        model = self._loaded(alias)
        shadow = config.shadow if config.shadow != alias else None
        return Route(experiment, model, shadow, self._models.get(shadow) if shadow else None)

    def readiness(self) -> str:
        """What serves, e.g. "champion version 3, challenger version 4"; NoModelLoaded naming
        the first variant that gets users but has no model. A shadow without a model does
        not make the pool unready: requests are answered without it."""
        config = self._router_in_effect().config
        parts = [f"{alias} version {self._loaded(alias).version}" for alias in config.primary]
        if config.shadow is not None:
            shadow = self._models.get(config.shadow)
            parts.append(
                f"shadow {config.shadow} version {shadow.version}"
                if shadow is not None
                else f"shadow {config.shadow} not loaded ({self._why_not(config.shadow)}); "
                "requests are answered without it"
            )
        return ", ".join(parts)

    def _router_in_effect(self) -> Router:
        if self._router is None:
            raise NoModelLoaded(f"no routing config in effect yet: {self._no_routing}")
        return self._router

    def _loaded(self, alias: str) -> ServingModel:
        model = self._models.get(alias)
        if model is None:
            raise NoModelLoaded(
                f"no verified '{alias}' model is loaded yet: {self._why_not(alias)}"
            )
        return model

    def _why_not(self, alias: str) -> str:
        return self._waiting.get(alias, f"looking up alias '{alias}' in the registry")

    def snapshot(self) -> dict[str, ServingModel]:
        return dict(self._models)

    async def refresh(self) -> Refresh:
        """Read the routing config, resolve every alias it (and the one in effect) names and
        swap in versions that changed; then put a new routing config in effect if it can
        serve. The first one has nothing to keep: it is in effect at once, while its models
        load."""
        async with self._lock:
            try:
                candidate: RoutingConfig | None = self._read_routing()
                problem = None
            except ConfigError as exc:
                candidate, problem = None, str(exc)
            first = None
            if self._router is None and candidate is not None:
                first = self._apply(candidate)
            self._pending = candidate if candidate != self.routing else None
            wanted: list[str] = []
            for config in (self.routing, self._pending):
                wanted += [a for a in (config.aliases if config else ()) if a not in wanted]
            outcomes = [await self._refresh_one(alias) for alias in wanted]
            routing = first or self._settle(problem, outcomes)
            self._drop_unrouted()
            return Refresh(routing, outcomes)

    def _settle(self, problem: str | None, outcomes: list[ReloadOutcome]) -> RoutingOutcome:
        """Put the pending routing config in effect if it can serve; else say why not."""
        pending = self._pending
        if problem is not None:
            return self._refuse(problem)
        if pending is None:
            self._refusal = None
            return RoutingOutcome("unchanged", self.routing.experiment if self.routing else None)
        missing = [
            o.alias for o in outcomes if o.alias in pending.aliases and o.result == "missing"
        ]
        if missing:
            names = ", ".join(f"'{alias}'" for alias in missing)
            return self._refuse(
                f"alias {names} named by the routing config is not set in the registry"
            )
        for alias in pending.primary:
            if alias not in self._models:
                return self._refuse(f"no model for variant '{alias}': {self._why_not(alias)}")
        return self._apply(pending)

    def _apply(self, config: RoutingConfig) -> RoutingOutcome:
        previous = self.routing
        self._router, self._pending, self._refusal = Router(config), None, None
        self._metrics.routing_reloads.labels("applied").inc()
        log.info(
            "routing applied",
            extra={
                "experiment": config.experiment,
                "variants": dict(config.variants),
                "shadow": config.shadow,
                "previous_experiment": previous.experiment if previous else None,
            },
        )
        return RoutingOutcome("applied", config.experiment)

    def _refuse(self, error: str) -> RoutingOutcome:
        """Keep the routing in effect (if any), count the refusal, log it once per reason."""
        active = self.routing
        self._metrics.routing_reloads.labels("refused").inc()
        if active is None:
            self._no_routing = f"routing config refused: {error}"
        if error != self._refusal:
            self._refusal = error
            log.error(
                "routing config refused",
                extra={"error": error, "experiment": active.experiment if active else None},
            )
        return RoutingOutcome("refused", active.experiment if active else None, error)

    def _drop_unrouted(self) -> None:
        """Unload models no routing config (in effect or pending) names any more."""
        named = {
            *(self.routing.aliases if self.routing else ()),
            *(self._pending.aliases if self._pending else ()),
        }
        for alias in [a for a in self._models if a not in named]:
            model = self._models[alias]
            self._models = {a: m for a, m in self._models.items() if a != alias}
            self._info(model).set(0)
            log.info(
                "model unloaded: no routing config names its alias",
                extra={"alias": alias, "model_version": model.version},
            )

    async def _refresh_one(self, alias: str) -> ReloadOutcome:
        current = self._models.get(alias)
        try:
            version = await self._call(alias, "resolve", self._source.resolve, alias)
        except LoadOverdue as exc:  # an earlier poll's load is still running: let it
            return self._waiting_for(ReloadOutcome(alias, None, "loading", str(exc)))
        except Exception as exc:  # the registry being down must not stop serving
            return self._registry_failed(alias, "resolve", None, exc)
        self._set_state(alias, "ok")
        if version is None:
            if alias not in self._unset:
                log.warning("alias not set in the registry", extra={"alias": alias})
            self._unset.add(alias)
            return self._waiting_for(ReloadOutcome(alias, None, "missing"))
        self._unset.discard(alias)
        if current is not None and current.version == version:
            return ReloadOutcome(alias, version, "unchanged")
        self._waiting[alias] = f"loading version {version}"
        late_version, late = self._late.pop(alias, (None, None))
        try:
            if late_version == version and isinstance(late, BaseException):
                raise late  # a slow load that failed: refused as if it had been on time
            if late_version == version and isinstance(late, PreparedModel):
                prepared = late
                log.info(
                    "late model load kept",
                    extra={"alias": alias, "model_version": version, "load_seconds": late.seconds},
                )
            else:
                loader = self._swap_loader if self._models else load_here
                prepared = await self._call(alias, "load", loader, self._source, version)
        except LoadOverdue as exc:
            self._metrics.reloads.labels(alias, "slow").inc()
            log.warning(
                "model load slow",
                extra={"alias": alias, "model_version": version, "error": str(exc)},
            )
            return self._waiting_for(ReloadOutcome(alias, version, "loading", str(exc)))
        except Exception as exc:  # any failure refuses this version, whatever its kind
            self._metrics.reloads.labels(alias, "failure").inc()
            if isinstance(exc, RegistryTimedOut | ConnectionError):
                return self._registry_failed(alias, "load", version, exc)
            log.error(
                "refused model version",
                extra={"alias": alias, "model_version": version, "error": str(exc)},
            )
            return self._waiting_for(ReloadOutcome(alias, version, "failed", str(exc)))
        self._set_state(alias, "ok")
        if self._before_serving is not None:
            await self._before_serving(prepared.scorer)
        model = ServingModel(
            alias=alias,
            version=prepared.version,
            sha256=prepared.sha256,
            run_id=prepared.run_id,
            scorer=prepared.scorer,
            loaded_at=datetime.now(UTC),
        )
        self._models = {**self._models, alias: model}
        self._metrics.reloads.labels(alias, "success").inc()
        if current is not None:
            self._info(current).set(0)
        self._info(model).set(1)
        log.info(
            "serving model version",
            extra={
                "alias": alias,
                "model_version": version,
                "previous_version": current.version if current else None,
                "scorer": model.scorer.kind,
                "scorer_note": model.scorer.note,
                "loaded_by": prepared.loaded_by,
                "load_seconds": round(prepared.seconds, 3),
            },
        )
        return ReloadOutcome(alias, version, "loaded")

    async def _call(self, alias: str, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread of its own, waited for at most the registry timeout.

        A thread blocked in a call to a frozen database cannot be stopped from Python. One
        that overruns is left to finish on its own, and until it does no other call is made
        for this alias: each poll would otherwise leave one more thread, and one more
        database connection, stuck behind the first. The driver's own timeouts (see
        `databases.with_driver_timeouts`) usually end it soon after; a database server that
        is stopped outright may hold it for good. The thread is a daemon so that it holds
        up neither the event loop's shutdown (which waits for `asyncio.to_thread`'s
        threads) nor the process's exit.
        """
        overdue = self._overdue.get(alias)
        if overdue is not None:
            waited = time.monotonic() - overdue.started
            if overdue.operation == "load" and waited < HARD_LIMIT_SECONDS:
                raise LoadOverdue(
                    f"still loading a version of alias '{alias}' after {waited:.0f} s, past the "
                    f"{self._timeouts['load']:g} s load timeout (a busy machine); it serves "
                    "at the first poll after it finishes"
                )
            raise RegistryTimedOut(
                f"registry has not answered the {overdue.operation} of alias '{alias}' "
                f"started {waited:.0f} s ago; no new call until it does"
            )
        started = time.monotonic()
        future = _in_daemon_thread(f"registry-{operation}-{alias}", fn, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeouts[operation])
        except TimeoutError:
            version = args[1] if operation == "load" else None
            self._overdue[alias] = _Overdue(operation, started, future, version)
            future.add_done_callback(lambda done: self._returned(alias, done))
            if operation == "load":
                raise LoadOverdue(
                    f"loading a version of alias '{alias}' took longer than the "
                    f"{self._timeouts[operation]:g} s load timeout; it is let finish"
                ) from None
            raise RegistryTimedOut(
                f"registry did not answer the {operation} of alias '{alias}' "
                f"within {self._timeouts[operation]:g} s"
            ) from None

    def _returned(self, alias: str, future: asyncio.Future[Any]) -> None:
        """An overdue call came back. A resolve's answer is stale (the next poll asks again);
        a load's model, or the exception that refused it, is kept for the next poll, which
        serves (or refuses) it if the alias still points at its version."""
        overdue = self._overdue.pop(alias, None)
        if future.cancelled():
            return
        # Retrieving the exception also keeps asyncio from logging it as never retrieved.
        failure = future.exception()
        if overdue is not None and overdue.operation == "load":
            self._late[alias] = (overdue.version, failure or future.result())

    def _registry_failed(
        self, alias: str, operation: str, version: int | None, exc: Exception
    ) -> ReloadOutcome:
        if isinstance(exc, RegistryTimedOut):
            state: RegistryState = "timeout"
            outcome = ReloadOutcome(alias, version, "timeout", str(exc))
        elif isinstance(exc, ConnectionError):
            state = "unreachable"
            text = str(exc) or type(exc).__name__
            if not text.startswith("registry unreachable"):
                text = f"registry unreachable: {text}"
            outcome = ReloadOutcome(alias, version, "unreachable", text)
        else:
            state = "error"
            outcome = ReloadOutcome(alias, version, "failed", str(exc) or type(exc).__name__)
        self._metrics.registry_errors.labels(operation, state).inc()
        self._set_state(alias, state, operation, outcome.error)
        return self._waiting_for(outcome)

    def _set_state(
        self,
        alias: str,
        state: RegistryState,
        operation: str | None = None,
        error: str | None = None,
    ) -> None:
        """Log the registry's state for `alias` when it changes (not on every poll)."""
        previous = self._states.get(alias, "ok")
        self._states[alias] = state
        if state == previous:
            return
        fields = {"alias": alias, "registry_state": state, "previous_state": previous}
        if state == "ok":
            log.info(_STATE_MESSAGES[state], extra=fields)
        else:
            log.warning(
                _STATE_MESSAGES[state], extra={**fields, "operation": operation, "error": error}
            )

    def _waiting_for(self, outcome: ReloadOutcome) -> ReloadOutcome:
        """Record why `outcome.alias` has no new model, for /ready while it has none."""
        if outcome.result == "missing":
            reason = f"alias '{outcome.alias}' not set in the registry"
        elif outcome.result == "failed" and outcome.version is not None:
            reason = f"version {outcome.version} refused: {outcome.error}"
        else:
            reason = outcome.error or outcome.result
        self._waiting[outcome.alias] = reason
        return outcome

    def _info(self, model: ServingModel) -> Any:
        return self._metrics.model_info.labels(
            str(model.version), model.alias, model.sha256, model.scorer.kind
        )

    async def run(self, interval_seconds: float) -> None:
        """Load the aliases now, then poll the registry forever; cancelled at shutdown.

        The server starts this as a background task, so it listens (and `/health` answers)
        while the first load is still waiting on the registry.
        """
        while True:
            try:
                await self.refresh()
            except Exception:  # keep polling whatever happened in one round
                log.exception("model refresh failed")
            self.first_round.set()
            await asyncio.sleep(interval_seconds)


def _in_daemon_thread(name: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Start `fn(*args)` in a new daemon thread; its result or exception arrives in the future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the call was stuck
            loop.call_soon_threadsafe(settle)

    def run() -> None:
        try:
            result = fn(*args)
        except Exception as exc:  # handed to whoever awaits the future
            error = exc
            deliver(lambda: None if future.done() else future.set_exception(error))
        else:
            deliver(lambda: None if future.done() else future.set_result(result))

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
