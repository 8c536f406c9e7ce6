"""The search space: checked against the training config, expanded into numbered trials, and
cut into stage tasks that trials with equal settings share; those stages score a fold as
sklearn's cross-validation of the whole pipeline does, and a search records every trial."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from sentiment_mlops.config import ConfigError, TrainConfig
from sentiment_mlops.data import LabelledTexts
from sentiment_mlops.model import build_classifier, build_preprocessor, build_vectorizer
from sentiment_mlops.tuning import work
from sentiment_mlops.tuning.search import TrialResult, plan, run_search
from sentiment_mlops.tuning.space import (
    TuneConfig,
    check_space,
    expand,
    load_tune_config,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def snippets(shared_data: Path) -> LabelledTexts:
    """300 movie-review snippets of each class, drawn reproducibly."""
    frame = pd.read_csv(shared_data / "mr-rt-polarity" / "all.csv", keep_default_na=False)
    drawn = frame.groupby("label").sample(300, random_state=0)
    return LabelledTexts(drawn["text"].tolist(), drawn["label"].tolist(), "mr sample")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    """A Dask cluster inside this process: one worker thread, no dashboard."""
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def space(**kwargs: object) -> TuneConfig:
    return TuneConfig.model_validate(kwargs)


def test_the_shipped_tune_config_is_valid() -> None:
    config = load_tune_config(ROOT / "configs" / "tune.yaml")
    check_space(config, TrainConfig(), "configs/tune.yaml")
    assert config.search == "random" and config.budget < config.grid_size()
    assert len(expand(config, TrainConfig())) == config.budget


def test_overrides_set_dotted_keys_and_keep_the_rest() -> None:
    config = with_overrides(TrainConfig(), {"vectorizer.ngram_range": [1, 3], "classifier.C": 0.5})
    assert config.vectorizer.ngram_range == (1, 3)
    assert config.classifier.C == 0.5
    assert config.vectorizer.min_df == TrainConfig().vectorizer.min_df


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (space(space={"vectorizer.ngramrange": [[1, 1]]}), r"space\.vectorizer\.ngramrange: not a"),
        (space(space={"seed": [1, 2]}), r"space\.seed: not a setting of a config section"),
        (space(space={"vectorizer.ngram_range": [[1, 2], [3, 1]]}), r"\[3, 1\]: ngram_range"),
        (space(space={"classifier.C": [1.0, -1.0]}), r"space\.classifier\.C: -1\.0: .*greater"),
        (space(space={}), r"nothing to search"),
        (
            space(
                search="grid", budget=3, space={"classifier.C": [1, 2], "vectorizer.min_df": [1, 2]}
            ),
            r"the grid has 4 points, more than the budget of 3",
        ),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(config: TuneConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=r"tune\.yaml: .*" + message):
        check_space(config, TrainConfig(), "tune.yaml")


def test_without_a_search_config_there_is_nothing_to_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"configs/tune\.yaml: not found; pass .* --config"):
        load_tune_config()


def test_an_empty_value_list_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "tune.yaml"
    path.write_text("space:\n  classifier.C: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no values to try for classifier\.C"):
        load_tune_config(path)


def test_a_grid_is_every_combination_in_order() -> None:
    values = {"vectorizer.min_df": [1, 2, 3], "classifier.C": [0.1, 1.0]}
    trials = expand(space(search="grid", budget=6, space=values), TrainConfig())
    expected = [
        dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())
    ]
    assert [t.overrides for t in trials] == expected
    assert [t.number for t in trials] == [1, 2, 3, 4, 5, 6]
    assert all(t.config is not None and t.error is None for t in trials)


def test_a_random_search_draws_distinct_points_reproducibly() -> None:
    values = {"vectorizer.min_df": [1, 2, 3, 4], "classifier.C": [0.1, 1.0, 10.0]}
    draw = space(search="random", budget=5, seed=7, space=values)
    first = [tuple(t.overrides.values()) for t in expand(draw, TrainConfig())]
    again = [tuple(t.overrides.values()) for t in expand(draw, TrainConfig())]
    other = [
        tuple(t.overrides.values())
        for t in expand(draw.model_copy(update={"seed": 8}), TrainConfig())
    ]
    assert first == again and first != other
    assert len(set(first)) == 5
    assert set(first) <= set(itertools.product(*values.values()))
    whole = expand(draw.model_copy(update={"budget": 50}), TrainConfig())
    assert len(whole) == 12  # a budget beyond the grid runs the grid once


def test_an_invalid_combination_is_a_failed_trial_not_an_error() -> None:
    """Values are checked one by one up front; a trial whose combination does not make a
    valid config is recorded as failed with why, and the others still run."""
    trials = expand(
        space(search="grid", budget=2, space={"vectorizer.ngram_range": [[1, 2], [2, 1]]}),
        TrainConfig(),
    )
    assert trials[0].config is not None
    assert trials[1].config is None
    assert trials[1].error is not None and "vectorizer.ngram_range" in trials[1].error


def test_a_search_records_an_invalid_combination_as_a_failed_trial(dask_client: Client) -> None:
    """The trials that make no valid config are in the results, in order among the others,
    failed with why; the valid ones are scored."""
    config = space(
        search="grid",
        budget=4,
        folds=2,
        space={"vectorizer.ngram_range": [[1, 1], [2, 1]], "classifier.C": [1.0, 0.5]},
    )
    trials = expand(config, TrainConfig())
    words = ("great", "fine", "dull", "awful")
    texts = [f"a {words[i % 4]} {words[(i + 1) % 4]} film {i}" for i in range(24)]
    labels = ["positive" if i % 4 < 2 else "negative" for i in range(24)]
    data = LabelledTexts(texts, labels, "made up")
    reported: list[TrialResult] = []
    results = run_search(dask_client, data, trials, config, on_result=reported.append)
    assert [r.number for r in results] == [1, 2, 3, 4]
    assert [r.ok for r in results] == [True, True, False, False]
    for failed in results[2:]:
        assert failed.error is not None and "ngram_range" in failed.error
        assert failed.scores == [] and failed.metrics == {}
        assert failed.tags["error"] == failed.error
        assert failed.params == failed.trial.overrides
    assert all(len(r.scores) == 2 for r in results[:2])
    assert sorted(r.number for r in reported) == [1, 2, 3, 4], "each reported once"


def test_trials_differing_only_in_the_classifier_share_their_features() -> None:
    values = {"vectorizer.ngram_range": [[1, 1], [1, 2]], "classifier.C": [0.1, 1.0, 10.0]}
    trials = expand(space(search="grid", budget=6, space=values), TrainConfig())
    shared = plan(trials, folds=3)
    assert len(shared) == 6 * 3  # one score per trial and fold
    assert len({s.preprocess for s in shared}) == 1
    assert len({s.features for s in shared}) == 2 * 3  # per vectorizer setting and fold
    for score in shared:  # the same features only for the same fold and vectorizer
        same = [s for s in shared if s.features == score.features]
        assert {s.fold for s in same} == {score.fold}
        assert {tuple(s.trial.overrides["vectorizer.ngram_range"]) for s in same} == {
            tuple(score.trial.overrides["vectorizer.ngram_range"])
        }
    own = plan(trials, folds=3, share=False)
    assert len({s.features for s in own}) == 6 * 3
    assert len({s.preprocess for s in own}) == 6


def test_scores_are_submitted_grouped_by_their_features() -> None:
    """So that few feature matrices are alive at once."""
    values = {"classifier.C": [0.1, 1.0], "vectorizer.ngram_range": [[1, 1], [1, 2]]}
    planned = plan(expand(space(search="grid", budget=4, space=values), TrainConfig()), folds=2)
    groups = [
        key
        for key, _ in itertools.groupby(
            s.trial.overrides["vectorizer.ngram_range"] for s in planned
        )
    ]
    assert len(groups) == 2


def test_a_folds_stages_score_it_as_a_pipeline_in_cross_validation_does(
    snippets: LabelledTexts,
) -> None:
    """Preprocessing shared across folds, the vectorizer fitted on each fold's training part:
    the same scores as sklearn's `cross_val_score` of one Pipeline of the same stages, on
    the same folds (a vectorizer that saw the validation texts gives others)."""
    config = with_overrides(TrainConfig(), {"preprocess.negation": True})
    texts = np.asarray(snippets.texts, dtype=object)
    labels = np.asarray(snippets.labels, dtype=object)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=3).split(texts, labels))
    corpus = work.preprocess(work.Corpus.of(texts, labels), config)
    scores = []
    for number, (train, validation) in enumerate(folds, start=1):
        features = work.featurize(corpus, work.Fold(number, train, validation), config)
        scored = work.score_fold(features, config, 1, number, "accuracy")
        assert scored.error is None
        scores.append(scored.score)
    pipeline = Pipeline(
        [
            ("preprocess", build_preprocessor(config)),
            ("vectorizer", build_vectorizer(config)),
            ("classifier", build_classifier(config)),
        ]
    )
    expected = cross_val_score(pipeline, list(texts), labels, cv=folds, scoring="accuracy")
    assert scores == pytest.approx(expected.tolist(), abs=1e-12)
