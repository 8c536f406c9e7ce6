"""NB log-count-ratio scaling (the NBSVM recipe) against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from sentiment_mlops.nb_scaling import NBLogisticRegression

# Four documents, three features (tf-idf-like values: only presence counts for the ratios).
X = sparse.csr_matrix(
    [
        [0.5, 0.0, 0.2],
        [0.9, 0.3, 0.0],
        [0.0, 0.7, 0.4],
        [0.0, 0.6, 0.0],
    ]
)
Y = np.array(["pos", "pos", "neg", "neg"])


def test_ratios_match_a_hand_computation() -> None:
    model = NBLogisticRegression(alpha=1.0).fit(X, Y)
    # documents containing each feature: positive [2, 1, 1], negative [0, 2, 1]; + alpha
    p = np.array([3.0, 2.0, 2.0])
    q = np.array([1.0, 3.0, 2.0])
    expected = np.log((p / 7.0) / (q / 6.0))
    np.testing.assert_allclose(model.ratios_, [expected], rtol=1e-12)
    assert list(model.classes_) == ["neg", "pos"]


def test_alpha_smooths_the_counts() -> None:
    model = NBLogisticRegression(alpha=0.5).fit(X, Y)
    p = np.array([2.5, 1.5, 1.5])
    q = np.array([0.5, 2.5, 1.5])
    np.testing.assert_allclose(model.ratios_[0], np.log((p / p.sum()) / (q / q.sum())))


def test_without_interpolation_it_is_logistic_regression_on_scaled_features() -> None:
    model = NBLogisticRegression(C=3.0, beta=1.0).fit(X, Y)
    scaled = X @ sparse.diags(model.ratios_[0])
    reference = LogisticRegression(C=3.0).fit(scaled, Y == "pos")
    np.testing.assert_allclose(model.coef_, model.ratios_ * reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-10)
    np.testing.assert_allclose(
        model.predict_proba(X)[:, 1], reference.predict_proba(scaled)[:, 1], rtol=1e-10
    )


def test_class_weight_reaches_the_logistic_regression_as_in_sklearn() -> None:
    """On unbalanced classes "balanced" changes the fit, exactly as it changes sklearn's
    LogisticRegression on the same NB-scaled features."""
    rng = np.random.default_rng(0)
    x = sparse.random(40, 6, density=0.5, format="csr", random_state=rng)
    y = np.array(["pos"] * 30 + ["neg"] * 10)
    plain = NBLogisticRegression(C=3.0).fit(x, y)
    balanced = NBLogisticRegression(C=3.0, class_weight="balanced").fit(x, y)
    scaled = x @ sparse.diags(balanced.ratios_[0])
    reference = LogisticRegression(C=3.0, class_weight="balanced").fit(scaled, y == "pos")
    np.testing.assert_allclose(balanced.coef_, balanced.ratios_ * reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(balanced.intercept_, reference.intercept_, rtol=1e-10)
    assert np.abs(balanced.intercept_ - plain.intercept_).max() > 0.1, "the weights matter"


def test_interpolation_moves_the_weights_towards_their_mean_magnitude() -> None:
    full = NBLogisticRegression(beta=1.0).fit(X, Y)
    mixed = NBLogisticRegression(beta=0.25).fit(X, Y)
    w = full.coef_[0] / full.ratios_[0]
    expected = 0.75 * np.abs(w).mean() + 0.25 * w
    np.testing.assert_allclose(mixed.coef_[0], mixed.ratios_[0] * expected, rtol=1e-10)
    # beta = 0: every weight is the same, so the decision is the NB log-ratio score itself
    nb_only = NBLogisticRegression(beta=0.0).fit(X, Y)
    scale = nb_only.coef_[0] / nb_only.ratios_[0]
    np.testing.assert_allclose(scale, scale[0])


def test_several_classes_are_fitted_one_vs_rest_with_their_own_ratios() -> None:
    y = np.array(["a", "b", "c", "c"])
    model = NBLogisticRegression().fit(X, y)
    assert model.coef_.shape == model.ratios_.shape == (3, 3)
    assert not np.allclose(model.ratios_[0], model.ratios_[1])
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    expected = 1 / (1 + np.exp(-(X @ model.coef_.T + model.intercept_)))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    ("params", "message"), [({"alpha": 0.0}, "alpha"), ({"beta": 1.5}, "beta")]
)
def test_bad_parameters_are_refused(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NBLogisticRegression(**params).fit(X, Y)


def test_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="two classes"):
        NBLogisticRegression().fit(X, np.array(["pos"] * 4))
