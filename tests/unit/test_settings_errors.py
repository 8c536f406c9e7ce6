"""An invalid `SENTIMENT_*` setting is one line naming the variable, exit 2, in every command,
and never shows the value: a database URL carries its password."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.databases import masked_url

runner = CliRunner()

SECRET = "MyS3cretPW"


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        (
            {"SENTIMENT_DATABASE_URL": f"mysql+pymysql://u:{SECRET}@db/x"},
            "SENTIMENT_DATABASE_URL: the prediction log needs a sqlite or postgresql+psycopg2 "
            "URL, not mysql+pymysql://",
        ),
        (
            {"SENTIMENT_DATABASE_URL": f"postgresql://postgres:{SECRET}@h/x"},
            "SENTIMENT_DATABASE_URL: the prediction log needs",
        ),
        ({"SENTIMENT_PORT": "0"}, "SENTIMENT_PORT: Input should be greater than or equal to 1"),
        ({"SENTIMENT_MAX_BATCH_SIZE": "abc"}, "SENTIMENT_MAX_BATCH_SIZE: Input should be a valid"),
    ],
)
@pytest.mark.parametrize("command", [["ab", "report"], ["models", "list"], ["serve"], ["train"]])
def test_an_invalid_setting_is_one_line_naming_it(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    said: str,
    command: list[str],
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid setting: ")
    assert said in lines[0]
    assert SECRET not in result.output and "Traceback" not in result.output
    assert "input_value" not in result.output


def test_a_url_shown_has_its_password_masked() -> None:
    assert masked_url(f"postgresql+psycopg2://app:{SECRET}@db:5432/x") == (
        "postgresql+psycopg2://app:***@db:5432/x"
    )
    assert masked_url("sqlite:////var/lib/mlflow.db") == "sqlite:////var/lib/mlflow.db"
    assert masked_url("http://mlflow:5000") == "http://mlflow:5000"
