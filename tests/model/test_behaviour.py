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


# Tweet furniture that the tokenizer keeps (unlike case, punctuation and spacing, which it
# erases, so invariance to those could not fail): each adds tokens such as "http", "co",
# "united", "rt", "travel" or "45am" that the model has weights for.
TWEET_NOISE = [
    "{} http://t.co/x7Qa2LmZ",
    "@united {}",
    "RT @sarah_k: {}",
    "{} #travel",
    "{} at 9:45am",
]


@pytest.mark.parametrize(("text", "expected"), PLAIN)
def test_invariance_to_tweet_noise(default_model: Pipeline, text: str, expected: str) -> None:
    """A link, a mention, a retweet prefix, a hashtag or a time does not change what a
    person reads as the sentiment, so it must not change the label either."""
    noisy = [template.format(text) for template in TWEET_NOISE]
    assert {t: label(default_model, t) for t in noisy} == dict.fromkeys(noisy, expected)


@pytest.mark.parametrize("template", TWEET_NOISE)
def test_tweet_noise_reaches_the_model(default_model: Pipeline, template: str) -> None:
    """Keeps the invariance test honest: the noise does move the probabilities."""
    shifts = [
        abs(positive(default_model, template.format(text)) - positive(default_model, text))
        for text, _ in PLAIN
    ]
    assert max(shifts) > 0.01, f"{template!r} no longer changes any score: pick other noise"
