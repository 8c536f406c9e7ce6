"""Behavioural tests of the default model, in the style of CheckList (Ribeiro et al. 2020):
minimum functionality, directional expectations for negation, and invariances."""

from __future__ import annotations

import pytest
from sklearn.pipeline import Pipeline


def positive(model: Pipeline, text: str) -> float:
    classes = list(model.classes_)
    return float(model.predict_proba([text])[0][classes.index("positive")])


def label(model: Pipeline, text: str) -> str:
    return str(model.predict([text])[0])


PLAIN = [
    ("I love this", "positive"),
    ("What a wonderful day", "positive"),
    ("Thanks for the great service", "positive"),
    ("Best trip ever, thank you!", "positive"),
    ("The crew was friendly and helpful", "positive"),
    ("This is the worst experience ever", "negative"),
    ("I hate waiting in line", "negative"),
    ("My flight was cancelled again", "negative"),
    ("Terrible customer service", "negative"),
    ("Lost my luggage, so angry", "negative"),
]


@pytest.mark.parametrize(("text", "expected"), PLAIN)
def test_minimum_functionality_on_plain_sentences(
    default_model: Pipeline, text: str, expected: str
) -> None:
    assert label(default_model, text) == expected


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("this is good", "this is not good"),
        ("I am happy", "I am not happy"),
        ("this is cool", "this is not cool"),
        ("I am impressed", "I am not impressed"),
        ("the flight was great", "the flight was not great"),
        ("the staff were helpful", "the staff were not helpful"),
    ],
)
def test_negation_flips_the_label(default_model: Pipeline, text: str, negated: str) -> None:
    assert label(default_model, text) == "positive"
    assert label(default_model, negated) == "negative"


@pytest.mark.parametrize(
    "word", ["good", "great", "nice", "amazing", "excellent", "helpful", "fun", "worth it"]
)
def test_negating_praise_lowers_positivity(default_model: Pipeline, word: str) -> None:
    assert positive(default_model, f"this is not {word}") < positive(
        default_model, f"this is {word}"
    )


def test_negating_criticism_raises_positivity(default_model: Pipeline) -> None:
    assert positive(default_model, "this is not bad") > positive(default_model, "this is bad")


NAMES = ["John", "Maria", "Ahmed", "Wei", "Priya", "Olga", "Kwame", "Sofia"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [("{} said the service was great", "positive"), ("{} said the service was awful", "negative")],
)
def test_invariance_to_names(default_model: Pipeline, template: str, expected: str) -> None:
    scores = [positive(default_model, template.format(name)) for name in NAMES]
    assert all(label(default_model, template.format(n)) == expected for n in NAMES)
    assert max(scores) - min(scores) < 0.1


@pytest.mark.parametrize("text", [t for t, _ in PLAIN])
def test_invariance_to_punctuation_noise(default_model: Pipeline, text: str) -> None:
    base = positive(default_model, text)
    for noisy in (f"{text}!!!", f"{text}...", f"  {text} ", text.replace(" ", "  "), f"{text} :"):
        assert positive(default_model, noisy) == pytest.approx(base, abs=1e-12)
