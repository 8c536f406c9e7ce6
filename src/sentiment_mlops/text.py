"""Text preprocessing before tokenising: a normaliser for what real text carries, and negation
scope marking.

Both are a pipeline step (`TextPreprocessor`) rather than the vectorizers' `preprocessor`, so
that a word and a character vectorizer see the same text, and so that the compiled scorer
runs exactly the code training ran: it calls `TextPreprocessor.process` on each text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin

# Placeholders for what carries no sentiment by its exact value; lowercase word characters,
# so the vectorizers' default token pattern keeps each as one token.
URL_TOKEN = "xxurl"
USER_TOKEN = "xxuser"

_TAG = re.compile(r"<\s*br\s*/?\s*>|</?[a-zA-Z][^<>]{0,200}>")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
# A run that starts like a UTF-8 lead byte read as cp1252/latin-1 ("Ã©", "â€™"): candidates
# for mojibake. Only a run that decodes as UTF-8 is replaced, so real "Ã" in "ESTEVÃO" stays.
_MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192"
    "\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]+"
)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_SPACE = re.compile(r"\s+")
# Words (with inner apostrophes, so "wasn't" stays one token nltk recognises) and single
# punctuation marks, which is what nltk's mark_negation expects to end a negation's scope.
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def normalise(text: str) -> str:
    """Undo what scraping and encoding did to a text, and hide what varies without meaning.

    HTML line breaks and tags become spaces, entities are decoded (`&amp;` -> `&`), mojibake
    is repaired where it decodes (`donâ€™t` -> `don't`), curly quotes become straight, U+FFFD
    (a character already lost) is dropped, URLs and @mentions become `xxurl` and `xxuser`,
    and runs of whitespace become one space.
    """
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _MOJIBAKE.sub(_repair, text)
    text = text.translate(_QUOTES).replace("\ufffd", "")
    text = _URL.sub(f" {URL_TOKEN} ", text)
    text = _MENTION.sub(f" {USER_TOKEN} ", text)
    return _SPACE.sub(" ", text).strip()


def mark_negation(text: str) -> str:
    """The text lowercased, tokenised into words and punctuation, with `_NEG` appended to
    every word between a negation ("not", "never", "n't", ...) and the next clause mark
    (. : ; ! ?), by nltk's `mark_negation`.

    Lowercased because nltk's negation words are matched case-sensitively: "Not good" and
    "not good" must mark alike. The vectorizers lowercase anyway, so nothing else is lost.
    """
    tokens = _TOKEN.findall(text.lower())
    # shallow: mark our own fresh list in place; nltk's default deep copy cost ~130 µs a tweet.
    return " ".join(_nltk_mark_negation()(tokens, shallow=True))


def _repair(match: re.Match[str]) -> str:
    run = match.group(0)
    for encoding in ("cp1252", "latin-1"):
        try:
            return run.encode(encoding).decode("utf-8")
        except UnicodeError:
            continue
    return run


def _nltk_mark_negation() -> Callable[..., list[str]]:
    """nltk's function, imported on first use: `nltk.sentiment` takes over a second to import,
    which a pipeline without negation marking should not pay."""
    from nltk.sentiment.util import mark_negation as nltk_mark_negation

    return nltk_mark_negation


class TextPreprocessor(TransformerMixin, BaseEstimator):
    """The first pipeline step when any preprocessing is on: texts in, texts out.

    Stateless (nothing is learned in `fit`), so one fitted instance gives the same output in
    training, in evaluation and in the compiled scorer.
    """

    def __init__(self, normalise: bool = True, negation: bool = False) -> None:
        self.normalise = normalise
        self.negation = negation

    def fit(self, texts: Iterable[str], y: object = None) -> TextPreprocessor:
        return self

    def transform(self, texts: Iterable[str]) -> list[str]:
        return [self.process(text) for text in texts]

    def process(self, text: str) -> str:
        """One text as the vectorizers will see it."""
        if self.normalise:
            text = normalise(text)
        if self.negation:
            text = mark_negation(text)
        return text

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.requires_fit = False
        return tags
