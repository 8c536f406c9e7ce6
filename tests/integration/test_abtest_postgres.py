"""The A/B report reading a prediction log on a real PostgreSQL server (timestamps with time
zones, the self-join of shadow rows, the window), in a database made for the test."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine

from sentiment_mlops.abtest.analysis import analyse
from sentiment_mlops.abtest.log import read_log
from sentiment_mlops.serving.predictions import metadata

from ..ab_logs import START, LogBuilder
from .test_registry_postgres import SERVER, postgres_uri

__all__ = ["postgres_uri"]  # the fixture, used by name below

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not SERVER, reason="no PostgreSQL (see test_registry_postgres.py)"),
]


def test_report_reads_a_postgres_log(postgres_uri: str) -> None:
    engine = create_engine(postgres_uri)
    metadata.create_all(engine)
    engine.dispose()
    LogBuilder("old").served("champion", 1, right=3, wrong=1).write(postgres_uri)
    later = START + timedelta(days=1)
    LogBuilder("homepage").paired(
        ("champion", 3),
        ("challenger", 4),
        both=80,
        only_shadow=12,
        only_primary=2,
        neither=6,
        unlabelled=20,
    ).write(postgres_uri, start=later)

    log = read_log(postgres_uri)
    assert (log.experiment, len(log.variant)) == ("homepage", 240)
    report = analyse(log)
    (comparison,) = report.comparisons
    assert (comparison.design, comparison.labelled, comparison.discordant) == (
        "paired",
        100,
        (12, 2),
    )
    assert [v.accuracy for v in report.variants] == [0.82, 0.92]

    recent = read_log(postgres_uri, since=later + timedelta(seconds=100))
    assert len(recent.variant) == 2 * 20  # 120 requests one second apart, each with its shadow
