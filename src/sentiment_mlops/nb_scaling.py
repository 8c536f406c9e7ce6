"""Logistic regression on Naive Bayes-scaled features: the NBSVM recipe of Wang & Manning
(2012, "Baselines and Bigrams"), with a logistic loss instead of the hinge so that it gives
probabilities.

Each feature is multiplied by its NB log-count ratio r = log((p/|p|1) / (q/|q|1)), where p
and q are the smoothed counts of documents containing it in the positive and the other
classes; a linear model is fitted on the scaled features, and its weights are interpolated
towards their mean magnitude, w' = (1 - beta) * mean|w| + beta * w (beta = 1: no
interpolation). Several classes are fitted one-vs-rest, each with its own ratios.

The fitted model is linear in the unscaled features: `coef_` holds r * w', so it scores (and
compiles, see scorer.py) like any linear classifier, with no scaling step at predict time.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils.validation import check_X_y, validate_data


class NBLogisticRegression(LinearClassifierMixin, BaseEstimator):
    """NB-scaled logistic regression; `alpha` smooths the counts, `beta` interpolates.

    The remaining parameters are LogisticRegression's, used for each binary fit.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        C: float = 1.0,
        solver: str = "lbfgs",
        max_iter: int = 1000,
        class_weight: Literal["balanced"] | None = None,
        tol: float = 1e-4,
        random_state: int | None = None,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.C = C
        self.solver = solver
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> NBLogisticRegression:
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        X, y = check_X_y(X, y, accept_sparse="csr", dtype=np.float64)
        validate_data(self, X, reset=True, accept_sparse="csr", skip_check_array=True)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("NBLogisticRegression needs at least two classes")
        present = sparse.csr_matrix(X, copy=True)
        present.data = (present.data != 0).astype(np.float64)
        targets = [1] if len(self.classes_) == 2 else range(len(self.classes_))
        ratios, coefs, intercepts = [], [], []
        for target in targets:
            is_target = y_index == target
            ratio = self._log_count_ratio(present, is_target)
            coef, intercept = self._fit_binary(X, is_target, ratio)
            ratios.append(ratio)
            coefs.append(ratio * coef)
            intercepts.append(intercept)
        self.ratios_ = np.vstack(ratios)
        self.coef_ = np.vstack(coefs)
        self.intercept_ = np.asarray(intercepts, dtype=np.float64)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Logistic of the decision (binary), or one-vs-rest logistics normalised to sum 1."""
        return np.asarray(self._predict_proba_lr(X))

    def _log_count_ratio(self, present: sparse.csr_matrix, is_target: np.ndarray) -> np.ndarray:
        p = self.alpha + np.asarray(present[is_target].sum(axis=0)).ravel()
        q = self.alpha + np.asarray(present[~is_target].sum(axis=0)).ravel()
        return np.asarray(np.log(p / p.sum()) - np.log(q / q.sum()))

    def _fit_binary(
        self, X: sparse.csr_matrix, is_target: np.ndarray, ratio: np.ndarray
    ) -> tuple[np.ndarray, float]:
        model = LogisticRegression(
            C=self.C,
            solver=self.solver,
            max_iter=self.max_iter,
            class_weight=self.class_weight,
            tol=self.tol,
            random_state=self.random_state,
        )
        model.fit(X @ sparse.diags(ratio), is_target)
        weights = model.coef_[0]
        interpolated = (1 - self.beta) * np.abs(weights).mean() + self.beta * weights
        return interpolated, float(model.intercept_[0])
