"""Entity features without Feast: the compiled scorer with entity columns, the events, the
aggregates and the time split (pandas only, so these run in the core install on pandas 3;
the feature store itself is tested in tests/features)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sentiment_mlops.config import CalibrationConfig, FeaturesConfig, Settings, TrainConfig
from sentiment_mlops.data import DataError, LabelledTexts
from sentiment_mlops.features.aggregates import FEATURES, account_rows, user_rows
from sentiment_mlops.features.events import TIMESTAMP, load_events, prepare_events, time_split
from sentiment_mlops.features.training import load_context_split
from sentiment_mlops.model import build_pipeline, entity_features, model_input, plain_vocabulary
from sentiment_mlops.scorer import CompiledLinearScorer, SklearnScorer, make_scorer
from sentiment_mlops.serving.entity_features import EntityKeys, OnlineFeatures
from sentiment_mlops.serving.metrics import Metrics

from ..apps import captured_logs
from ..prediction_events import SUBJECT_KEY, keyed_hash

TOLERANCE = 2e-15
NAMES = ("user_tweets", "user_negative_share", "account_negative_share_24h")


@pytest.fixture(scope="module")
def context_file(shared_data: Path) -> Path:
    return shared_data / "twitter-us-airline-sentiment" / "with-context.csv"


@pytest.fixture(scope="module")
def tweets(context_file: Path) -> pd.DataFrame:
    return load_events(context_file, SUBJECT_KEY)


def synthetic_entities(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.poisson(3, n), rng.random(n), rng.random(n)]).astype(float)


@pytest.mark.parametrize("calibration", ["none", "sigmoid"])
def test_compiled_scorer_scores_text_and_entities_as_sklearn(
    tweets: pd.DataFrame, calibration: str
) -> None:
    train, test = tweets.iloc[:3000], tweets.iloc[3000:3400]
    config = TrainConfig(calibration=CalibrationConfig(method=calibration, cv=3))  # type: ignore[arg-type]
    pipeline = build_pipeline(config, NAMES)
    train_entities = synthetic_entities(len(train), 0)
    train_x = model_input(train["text"].tolist(), train_entities, NAMES)
    plain_vocabulary(pipeline.fit(train_x, train["label"].tolist()))
    assert entity_features(pipeline) == NAMES

    scorer = make_scorer(pipeline)
    assert isinstance(scorer, CompiledLinearScorer), getattr(scorer, "note", "")
    assert scorer.entity_features == NAMES
    # what serving scores an unknown entity with: the training columns' means
    means = train_entities.mean(axis=0).tolist()
    assert scorer.entity_means == pytest.approx(means, rel=1e-12)
    assert SklearnScorer(pipeline).entity_means == pytest.approx(means, rel=1e-12)
    texts, entities = test["text"].tolist(), synthetic_entities(len(test), 1)
    expected = pipeline.predict_proba(model_input(texts, entities, NAMES))
    batch = scorer.predict_proba(texts, entities)
    one_by_one = np.vstack(
        [scorer.predict_proba([t], entities[i : i + 1]) for i, t in enumerate(texts)]
    )
    assert np.abs(batch - expected).max() < TOLERANCE
    assert np.abs(one_by_one - expected).max() < TOLERANCE
    # The entity columns matter: other values give other probabilities.
    assert np.abs(scorer.predict_proba(texts, entities * 0) - batch).max() > 1e-3
    fallback = SklearnScorer(pipeline)
    assert fallback.entity_features == NAMES
    assert np.abs(fallback.predict_proba(texts, entities) - expected).max() == 0.0

    with pytest.raises(ValueError, match="needs entity features"):
        scorer.predict_proba(texts)
    with pytest.raises(ValueError, match="shape"):
        scorer.predict_proba(texts, entities[:, :2])


def test_text_only_scorer_refuses_entities(tweets: pd.DataFrame) -> None:
    sample = tweets.iloc[:500]
    pipeline = plain_vocabulary(
        build_pipeline(TrainConfig()).fit(sample["text"].tolist(), sample["label"].tolist())
    )
    scorer = make_scorer(pipeline)
    assert scorer.entity_features == ()
    with pytest.raises(ValueError, match="takes no entity features"):
        scorer.predict_proba(["hi"], np.zeros((1, 3)))


def test_nb_scaling_with_entity_features_is_refused() -> None:
    config = TrainConfig.model_validate({"nb_scaling": {"enabled": True}})
    with pytest.raises(ValueError, match="nb_scaling"):
        build_pipeline(config, NAMES)


def test_events_keep_one_row_per_id_sorted_by_time(
    tweets: pd.DataFrame, context_file: Path
) -> None:
    assert len(tweets) == 14640 - 155
    assert tweets["event_id"].is_unique
    assert tweets[TIMESTAMP].is_monotonic_increasing
    assert str(tweets[TIMESTAMP].dt.tz) == "UTC"
    # authors are their keyed hash (the one the prediction log keeps), never the name
    first = pd.read_csv(context_file, dtype=str, nrows=1).iloc[0]
    row = tweets[tweets["event_id"] == first["tweet_id"]].iloc[0]
    assert row["user_id"] == keyed_hash(first["user"].strip())


def test_bad_context_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("tweet_id,created_at,user,text,label\n1,2015-02-20T10:00:00Z,a,hi,neutral\n")
    with pytest.raises(DataError, match="missing airline"):
        load_events(path, SUBJECT_KEY)
    path.write_text("tweet_id,created_at,user,airline,text,label\n1,yesterday,a,Delta,hi,neutral\n")
    with pytest.raises(DataError, match="row 1, column 'created_at': not a timestamp"):
        load_events(path, SUBJECT_KEY)
    path.write_text(
        "tweet_id,created_at,user,airline,text,label\n"
        "1,2015-02-20T10:00:00Z,a,Delta,hi,neutral\n"
        "2,2015-02-20T11:00:00Z,,Delta,hi,neutral\n"
    )
    with pytest.raises(DataError, match="row 2, column 'user': empty"):
        load_events(path, SUBJECT_KEY)
    path.write_text(
        "tweet_id,created_at,user,airline,text,label\n1,2015-02-20T10:00:00Z,a,Delta,hi,NaN\n"
    )
    with pytest.raises(DataError, match="row 1, column 'label': the word NaN"):
        load_events(path, SUBJECT_KEY)


def test_a_context_text_over_the_limit_names_its_row_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "tweet_id,created_at,user,airline,text,label\n"
        "1,2015-02-20T11:00:00Z,a,Delta,a long tweet,neutral\n"
        "2,2015-02-20T10:00:00Z,b,Delta,hi,neutral\n"
    )
    with pytest.raises(DataError, match=r"events\.csv: row 1, column 'text': text of 12 char"):
        load_events(path, SUBJECT_KEY, max_text_chars=11)
    assert len(load_events(path, SUBJECT_KEY, max_text_chars=12)) == 2


def test_a_time_split_keeps_the_training_limits(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "events.csv"
    rows = [f"{i},2015-02-20T1{i}:00:00Z,u{i},Delta,tweet {i},{'abc'[i % 3]}" for i in range(6)]
    path.write_text("tweet_id,created_at,user,airline,text,label\n" + "\n".join(rows) + "\n")
    config = TrainConfig(features=FeaturesConfig(split="time"))
    var = tmp_path / "var"  # where the subject key is generated
    assert len(load_context_split(path, config, Settings(var_dir=var, max_classes=3)).train) == 5
    with pytest.raises(DataError, match=r"3 classes, more than the limit of 2"):
        load_context_split(path, config, Settings(var_dir=var, max_classes=2))
    limited = Settings(var_dir=var, max_text_chars=5, max_train_text_chars=6)
    with pytest.raises(DataError, match=r"row 1, column 'text': text of 7 char.*\(and 5 more"):
        load_context_split(path, config, limited)


def test_time_split_trains_only_on_the_past(tweets: pd.DataFrame) -> None:
    train, test = time_split(tweets, 0.2)
    assert len(train) + len(test) == len(tweets)
    assert train[TIMESTAMP].max() < test[TIMESTAMP].min()
    assert len(test) == pytest.approx(0.2 * len(tweets), abs=10)


def test_aggregates_count_only_up_to_their_own_time() -> None:
    frame = pd.DataFrame(
        [
            ("1", "2015-02-20T10:00:00Z", "ann", "Delta", "negative"),
            ("2", "2015-02-20T10:00:00Z", "ann", "Delta", "positive"),
            ("3", "2015-02-21T11:00:00Z", "ann", "Delta", "neutral"),
        ],
        columns=["event_id", "event_timestamp", "user_id", "account", "label"],
    ).assign(text="t")
    events = prepare_events(frame, "test")
    users = user_rows(events)
    assert users["user_tweets"].tolist() == [2, 3]
    assert users["user_negative_share"].tolist() == pytest.approx([0.5, 1 / 3])
    accounts = account_rows(events)
    # In at 10:00 (2), out at 10:00 the next day (0), in at 11:00 (1), out a day later (0).
    assert accounts["account_tweets_24h"].tolist() == [2, 0, 1, 0]
    assert accounts["account_neutral_share_24h"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert set(FEATURES) <= {*users.columns, *accounts.columns}


def as_of(rows: pd.DataFrame, account: str, when: pd.Timestamp) -> pd.Series | None:
    """The feature row a point-in-time lookup picks: the latest at or before `when`."""
    earlier = rows[(rows["account"] == account) & (rows[TIMESTAMP] <= when)]
    return None if earlier.empty else earlier.iloc[-1]


def test_an_account_window_holds_exactly_the_last_24_hours() -> None:
    """Looked up at many moments between events, an account's row counts the events of the
    24 h before (counted here by hand): one 23.5 h old still counts, one 24.5 h old not."""
    start = pd.Timestamp("2015-02-20T00:00:00Z")
    hours = [0.0, 1.0, 1.0, 7.25, 20.0, 30.5, 49.0]
    labels = ["negative", "positive", "neutral", "negative", "positive", "negative", "neutral"]
    frame = pd.DataFrame(
        {
            "event_id": [str(i) for i in range(len(hours))],
            "event_timestamp": [start + pd.Timedelta(hours=h) for h in hours],
            "user_id": "ann",
            "account": "Delta",
            "label": labels,
        }
    )
    rows = account_rows(prepare_events(frame, "test"))
    first = as_of(rows, "Delta", start + pd.Timedelta(hours=23.5))
    assert first is not None and first["account_tweets_24h"] == 5, "23.5 h old still counts"
    later = as_of(rows, "Delta", start + pd.Timedelta(hours=24.5))
    assert later is not None and later["account_tweets_24h"] == 4, "24.5 h old does not"
    for step in range(4 * 80):  # every quarter hour, 5 min past, until long after the last
        when = start + pd.Timedelta(minutes=15 * step + 5)
        ages = [(when - start).total_seconds() / 3600 - h for h in hours]
        inside = [label for age, label in zip(ages, labels, strict=True) if 0 <= age < 24]
        row = as_of(rows, "Delta", when)
        assert row is not None
        assert row["account_tweets_24h"] == len(inside), when
        for label in ("negative", "neutral", "positive"):
            share = inside.count(label) / len(inside) if inside else 0.0
            assert row[f"account_{label}_share_24h"] == pytest.approx(share, abs=1e-12), when


def test_fingerprint_covers_entity_features() -> None:
    plain = LabelledTexts(["a", "b"], ["x", "y"], "s")
    with_features = LabelledTexts(["a", "b"], ["x", "y"], "s", [], np.zeros((2, 1)), ("f",))
    changed = LabelledTexts(["a", "b"], ["x", "y"], "s", [], np.ones((2, 1)), ("f",))
    assert len({plain.fingerprint(), with_features.fingerprint(), changed.fingerprint()}) == 3
    assert with_features.subset([1], "s", []).entities.shape == (1, 1)  # type: ignore[union-attr]


def test_live_events_count_every_prediction_and_share_labels_from_when_they_are_known() -> None:
    """The prediction log's events: a label (feedback) comes later or never, and a key may
    be missing (no user id, no account)."""
    frame = pd.DataFrame(
        {
            "event_id": ["p1", "p2", "p3", "p4"],
            "event_timestamp": [f"2026-01-01T{h}:00:00Z" for h in ("10", "11", "12", "14")],
            "user_id": ["u", "u", None, "u"],
            "account": ["A", "A", "A", None],
            "label": ["negative", None, "positive", "neutral"],
            # p3's feedback comes two days later: after p3 has left A's 24 h window
            "labelled_at": ["2026-01-01T10:30Z", None, "2026-01-03T12:00Z", "2026-01-01T14:05Z"],
        }
    )
    events = prepare_events(frame, "log", complete=False)
    users = user_rows(events).set_index("event_timestamp")
    assert users["user_tweets"].tolist() == [1, 1, 2, 3, 3]
    assert users["user_negative_share"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.5]
    assert users.loc["2026-01-01T14:05:00Z", "user_neutral_share"] == 0.5
    accounts = account_rows(events).set_index("event_timestamp")
    assert accounts["account_tweets_24h"].tolist() == [1, 1, 2, 3, 2, 1, 0]
    assert accounts["account_negative_share_24h"].tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert (accounts["account_positive_share_24h"] == 0).all(), "p3's label came too late"
    with pytest.raises(DataError, match="file: row 3, column 'user_id': empty"):
        prepare_events(frame, "file")


class Opening:
    """A store opener that counts its calls and can be held open-ended, and a reader that
    answers every lookup with one user tweet."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self, names: tuple[str, ...]) -> Any:
        self.calls += 1
        self.release.wait(30)

        class Reader:
            def read(self, user_id: str | None, account: str | None) -> dict[str, float | None]:
                return {"user_tweets": 1.0}

        return Reader()


def test_a_model_waits_for_its_store_to_open_and_then_reads_it_at_once() -> None:
    """`prepare` opens the store before the model serves: the first lookup, with a wait
    shorter than the opening, reads the store, and the store is opened once."""
    opening = Opening()
    opening.release.clear()
    threading.Timer(1.5, opening.release.set).start()
    features = OnlineFeatures(opening, Metrics(), timeout_seconds=0.5)

    async def first_request() -> Any:
        await features.prepare(("user_tweets",))
        return await features.lookup("champion", ("user_tweets",), (7.0,), EntityKeys("bob"))

    row = asyncio.run(first_request())
    features.close()
    assert row.source == "online" and row.values.tolist() == [1.0]
    assert opening.calls == 1


def test_a_store_slow_to_open_delays_the_model_only_until_the_open_timeout() -> None:
    opening = Opening()
    opening.release.clear()
    features = OnlineFeatures(opening, Metrics(), timeout_seconds=0.05, open_timeout_seconds=0.2)

    async def first_request() -> Any:
        with captured_logs("sentiment_mlops.serving.entity_features") as logs:
            await features.prepare(("user_tweets",))
        row = await features.lookup("champion", ("user_tweets",), (7.0,), EntityKeys("bob"))
        return logs, row

    logs, row = asyncio.run(first_request())
    opening.release.set()
    features.close()
    assert any(str(line.get("msg")).startswith("feature store still opening") for line in logs)
    assert row.defaults == {"user": "timeout"} and row.values.tolist() == [7.0]
