"""Text preprocessing: the normaliser on real examples, negation marking on known sentences."""

from __future__ import annotations

import pytest

from sentiment_mlops.text import URL_TOKEN, USER_TOKEN, TextPreprocessor, mark_negation, normalise


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # IMDB (aclImdb train): HTML line breaks inside reviews
        (
            "Re: Pro Jury<br /><br />Although the lead actress is STRIKINGLY beautiful",
            "Re: Pro Jury Although the lead actress is STRIKINGLY beautiful",
        ),
        # IMDB: a numeric entity for a Turkish dotless i
        ("the bath of Alt&#305;oklar, as promised", "the bath of Alt\u0131oklar, as promised"),
        # airline tweets: entities, a URL and mentions
        (
            "@VirginAmerica help, left headphones on flight 89. L&amp;F number at LAX!",
            f"{USER_TOKEN} help, left headphones on flight 89. L&F number at LAX!",
        ),
        (
            "@VirginAmerica I love this graphic. http://t.co/UT5GrRwAaA",
            f"{USER_TOKEN} I love this graphic. {URL_TOKEN}",
        ),
        (
            "Nice RT @VirginAmerica: Vibe www.example.com/x",
            f"Nice RT {USER_TOKEN} : Vibe {URL_TOKEN}",
        ),
        # UTF-8 read as cp1252 (mojibake), curly quotes, and a character already lost
        ("I donâ€™t like the cafÃ© \ufffdat all", "I don't like the café at all"),
        ("“Great” \u2018fun\u2019", "\"Great\" 'fun'"),
        # real accented text is left alone: "Ã" followed by a letter is not mojibake
        ("ESTEVÃO (George Freire)", "ESTEVÃO (George Freire)"),
        # an e-mail address is not a mention
        ("write to me@example.com", "write to me@example.com"),
        ("  spaced \t\n out  ", "spaced out"),
    ],
)
def test_normalise(raw: str, clean: str) -> None:
    assert normalise(raw) == clean


@pytest.mark.parametrize(
    ("sentence", "marked"),
    [
        (
            "I didn't like this movie. It was bad.",
            "i didn't like_NEG this_NEG movie_NEG . it was bad .",
        ),
        ("Not good, not bad!", "not good_NEG ,_NEG not_NEG bad_NEG !"),
        ("It was never boring; great", "it was never boring_NEG ; great"),
        ("Wasn't funny at all", "wasn't funny_NEG at_NEG all_NEG"),
        ("good movie", "good movie"),
        ("", ""),
    ],
)
def test_mark_negation(sentence: str, marked: str) -> None:
    assert mark_negation(sentence) == marked


def test_preprocessor_applies_the_chosen_steps_in_order() -> None:
    text = "Not good<br />at all @someone"
    assert TextPreprocessor(normalise=True, negation=False).transform([text]) == [
        f"Not good at all {USER_TOKEN}"
    ]
    assert TextPreprocessor(normalise=True, negation=True).transform([text]) == [
        f"not good_NEG at_NEG all_NEG {USER_TOKEN}_NEG"
    ]
    assert TextPreprocessor(normalise=False, negation=False).fit([text]).transform([text]) == [text]
