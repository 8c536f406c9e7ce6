"""Is the tuned model better than the champion, beyond the noise of one test set?

Both models predict the same test examples, so the comparison is paired: only the examples
on which exactly one of them is right carry information about which is better. McNemar's
exact test on those (`abtest.statistics.mcnemar_exact_p`) asks whether the new model's wins
outnumber its losses by more than a fair coin would; it is promoted only if they do, at
`alpha`. An accuracy gain of a few examples out of thousands is thus not enough, and a test
set with more disagreements needs a larger gain, as it should.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sentiment_mlops.abtest.statistics import ALPHA, mcnemar_exact_p


@dataclass(frozen=True)
class PairedComparison:
    """Two models' predictions on the same labelled examples."""

    examples: int
    new_accuracy: float
    old_accuracy: float
    wins: int  # examples only the new model got right
    losses: int  # examples only the old model got right
    p_value: float
    alpha: float

    @property
    def better(self) -> bool:
        """The new model is more accurate and the difference is significant at `alpha`."""
        return self.wins > self.losses and self.p_value < self.alpha

    def describe(self, old: str = "the champion") -> str:
        return (
            f"accuracy {self.new_accuracy:.4f} vs {self.old_accuracy:.4f} on {self.examples} "
            f"test examples; only the new model right on {self.wins}, only {old} on "
            f"{self.losses}; McNemar exact p = {self.p_value:.3g}"
        )


def compare_paired(
    labels: Sequence[str],
    new: Sequence[str],
    old: Sequence[str],
    alpha: float = ALPHA,
) -> PairedComparison:
    """Compare the predictions `new` and `old` of the same `labels`."""
    if not len(labels) == len(new) == len(old) or not labels:
        raise ValueError("need one prediction of each model per labelled example")
    new_right = [p == y for p, y in zip(new, labels, strict=True)]
    old_right = [p == y for p, y in zip(old, labels, strict=True)]
    wins = sum(n and not o for n, o in zip(new_right, old_right, strict=True))
    losses = sum(o and not n for n, o in zip(new_right, old_right, strict=True))
    return PairedComparison(
        examples=len(labels),
        new_accuracy=sum(new_right) / len(labels),
        old_accuracy=sum(old_right) / len(labels),
        wins=wins,
        losses=losses,
        p_value=mcnemar_exact_p(wins, losses),
        alpha=alpha,
    )
