"""Reading one experiment from the prediction log (SQLite or PostgreSQL), read-only, and the
`--since` window it is read over."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, create_engine, func, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sentiment_mlops.abtest.errors import AbTestError, PredictionLogUnavailable
from sentiment_mlops.abtest.statistics import BoolArray, FloatArray
from sentiment_mlops.serving.predictions import OVERRIDE_EXPERIMENT, feedback, predictions

# How long the PostgreSQL driver may take to connect before the report says it cannot.
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ExperimentLog:
    """One experiment's predictions, in time order, as arrays (one element per prediction).

    A shadow row's `labelled`/`correct` judge it against the feedback on its primary
    prediction, whose variant and correctness are `primary_variant`/`primary_correct` (empty
    and False for served rows), and `disagrees` says whether the two predicted different
    labels (known without feedback). `created_at` and `labelled_at` (when the feedback
    arrived; NaN without) are seconds since the epoch: the sequential tests read the labels in
    the order they arrived, so a later read only appends to the sequence an earlier one saw.
    """

    experiment: str
    most_recent: bool  # chosen as the experiment with the latest prediction
    since: datetime | None
    variant: npt.NDArray[np.str_]
    model_version: npt.NDArray[np.int64]
    latency_ms: FloatArray
    shadow: BoolArray
    labelled: BoolArray
    correct: BoolArray
    primary_variant: npt.NDArray[np.str_]
    primary_correct: BoolArray
    disagrees: BoolArray
    created_at: FloatArray
    labelled_at: FloatArray


def read_log(
    url: str, experiment: str | None = None, since: datetime | None = None
) -> ExperimentLog:
    """Read one experiment (default: the one with the latest prediction) from the log at `url`,
    predictions made at or after `since` only.

    AbTestError when there is nothing to read; PredictionLogUnavailable when the database
    cannot be reached or lacks the tables.
    """
    engine = _engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            name = experiment if experiment is not None else _most_recent(conn, since)
            rows = conn.execute(_rows_query(name, since)).all()
            if not rows:
                raise AbTestError(_nothing_message(conn, name, since))
    except SQLAlchemyError as exc:
        raise PredictionLogUnavailable(
            f"cannot read the prediction log at {shown}: {_reason(exc)}"
        ) from exc
    finally:
        engine.dispose()
    (
        variant,
        version,
        label,
        latency,
        shadow_of,
        created,
        primary_variant,
        primary_label,
        truth,
        received,
    ) = zip(*rows, strict=True)
    labelled = np.array([t is not None for t in truth], dtype=bool)
    shadow = np.array([s is not None for s in shadow_of], dtype=bool)
    return ExperimentLog(
        experiment=name,
        most_recent=experiment is None,
        since=since,
        variant=np.array(variant, dtype=np.str_),
        model_version=np.array(version, dtype=np.int64),
        latency_ms=np.array(latency, dtype=np.float64),
        shadow=shadow,
        labelled=labelled,
        correct=labelled & np.array([a == t for a, t in zip(label, truth, strict=True)]),
        primary_variant=np.array([v or "" for v in primary_variant], dtype=np.str_),
        primary_correct=labelled
        & np.array([a == t for a, t in zip(primary_label, truth, strict=True)]),
        disagrees=shadow & np.array([a != b for a, b in zip(label, primary_label, strict=True)]),
        created_at=_seconds(created),
        labelled_at=_seconds(received),
    )


def _seconds(moments: tuple[datetime | None, ...]) -> FloatArray:
    """Seconds since the epoch (NaN for None); a naive time is UTC, as the log writes them
    (SQLite keeps no offset)."""
    return np.array(
        [
            math.nan
            if m is None
            else (m if m.tzinfo is not None else m.replace(tzinfo=UTC)).timestamp()
            for m in moments
        ],
        dtype=np.float64,
    )


def current_versions(log: ExperimentLog) -> ExperimentLog:
    """The log from the first prediction after the latest change of model version of any
    variant: an experiment compares versions, so a new version (an alias moved) starts a new
    one. Reading across the change would mix the versions' evidence: a challenger that lost as
    one version and wins a little as the next could be promoted on the first one's record.

    Rows are in time order; during a hot swap the workers may interleave the two versions for
    a moment, so the cut follows the last prediction of any version other than the latest.
    """
    cut = 0
    for name in set(log.variant.tolist()):
        rows = np.flatnonzero(log.variant == name)
        older = rows[log.model_version[rows] != log.model_version[rows[-1]]]
        if len(older):
            cut = max(cut, int(older[-1]) + 1)
    if cut == 0:
        return log
    return replace(
        log,
        **{
            f.name: getattr(log, f.name)[cut:]
            for f in fields(log)
            if isinstance(getattr(log, f.name), np.ndarray)
        },
    )


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            raise PredictionLogUnavailable(
                f"no prediction log at {path}: nothing has been logged there yet "
                "(the server writes it; SENTIMENT_DATABASE_URL chooses another database)"
            )
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in (
        "psycopg2",
        "psycopg",
    ):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return create_engine(parsed, connect_args=connect_args)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line (e.g. `no such table: predictions`), not SQLAlchemy's wrapper
    with the statement and a link."""
    text = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _most_recent(conn: Connection, since: datetime | None) -> str:
    query = (
        select(predictions.c.experiment)
        .where(predictions.c.experiment != OVERRIDE_EXPERIMENT)
        .where(*([] if since is None else [predictions.c.created_at >= since]))
        .order_by(predictions.c.created_at.desc())
        .limit(1)
    )
    name = conn.execute(query).scalar()
    if name is None:
        raise AbTestError(
            "the prediction log has no predictions"
            + ("" if since is None else f" since {describe_moment(since)}")
        )
    return str(name)


def _rows_query(experiment: str, since: datetime | None) -> Any:
    """Every prediction of the experiment in time order, with (for a shadow one) the variant
    and label of the prediction it shadows, and the feedback on the request."""
    logged = predictions.alias("logged")
    shadowed = predictions.alias("shadowed")
    return (
        select(
            logged.c.variant,
            logged.c.model_version,
            logged.c.label,
            logged.c.latency_ms,
            logged.c.shadow_of,
            logged.c.created_at,
            shadowed.c.variant,
            shadowed.c.label,
            feedback.c.label,
            feedback.c.received_at,
        )
        .select_from(
            logged.outerjoin(shadowed, shadowed.c.id == logged.c.shadow_of).outerjoin(
                feedback,
                feedback.c.prediction_id == func.coalesce(logged.c.shadow_of, logged.c.id),
            )
        )
        .where(
            and_(
                logged.c.experiment == experiment,
                *([] if since is None else [logged.c.created_at >= since]),
            )
        )
        .order_by(logged.c.created_at, logged.c.id)
    )


def _nothing_message(conn: Connection, experiment: str, since: datetime | None) -> str:
    latest = func.max(predictions.c.created_at)
    known = conn.execute(
        select(predictions.c.experiment)
        .where(predictions.c.experiment != OVERRIDE_EXPERIMENT)
        .group_by(predictions.c.experiment)
        .order_by(latest.desc())
        .limit(10)
    ).scalars()
    names = ", ".join(repr(n) for n in known) or "none"
    window = "" if since is None else f" since {describe_moment(since)}"
    return (
        f"no predictions for experiment {experiment!r}{window} "
        f"(experiments in the log, most recent first: {names})"
    )


def describe_moment(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 date or date-time (UTC unless it has an offset), or a duration
    back from now: `30m`, `24h`, `7d`, `2w`. ValueError for anything else."""
    if match := _DURATION.match(text):
        amount, unit = match.groups()
        try:
            return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO date/time (2026-11-01, 2026-11-01T09:30, "
            "2026-11-01T09:30+01:00) nor a duration (30m, 24h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
