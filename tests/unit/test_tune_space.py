"""The search space: checked against the training config, expanded into numbered trials, and
cut into stage tasks that trials with equal settings share."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sentiment_mlops.config import ConfigError, TrainConfig
from sentiment_mlops.tuning.search import plan
from sentiment_mlops.tuning.space import (
    TuneConfig,
    check_space,
    expand,
    load_tune_config,
    with_overrides,
)

ROOT = Path(__file__).resolve().parents[2]


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
