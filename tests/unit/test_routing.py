"""Variant assignment (sticky, salted by the experiment, proportional to the weights, minimal
movement when weights change) and the routing config's validation."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment_mlops.cli import app
from sentiment_mlops.config import ConfigError, Settings
from sentiment_mlops.serving.routing import BUCKETS, Router, RoutingConfig, bucket, read_routing

from ..apps import write_routing

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user-{i}" for i in range(10_000)]


def split(experiment: str = "tone", **weights: float) -> Router:
    return Router(RoutingConfig(experiment=experiment, variants=weights))


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """`count` successes of `n` is within `sigmas` binomial standard deviations of n*p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_users_split_by_the_weights() -> None:
    router = split(champion=90, challenger=10)
    counts = Counter(router.assign(user) for user in USERS)
    assert set(counts) == {"champion", "challenger"}
    assert within(counts["challenger"], len(USERS), 0.10), counts


def test_a_user_keeps_its_variant_on_every_request_and_every_server() -> None:
    config = RoutingConfig(experiment="tone", variants={"champion": 50, "challenger": 50})
    users = USERS[:500]
    first = [Router(config).assign(user) for user in users]
    for _ in range(100):  # a fresh router each time: another worker, or after a reload
        router = Router(RoutingConfig.model_validate(config.model_dump()))
        assert [router.assign(user) for user in users] == first
    assert set(first) == {"champion", "challenger"}


def test_growing_the_challenger_moves_only_the_users_who_must_move() -> None:
    before = split(champion=90, challenger=10)
    after = split(champion=80, challenger=20)
    moves = Counter(
        (before.assign(user), after.assign(user))
        for user in USERS
        if before.assign(user) != after.assign(user)
    )
    assert set(moves) == {("champion", "challenger")}, moves
    assert within(moves["champion", "challenger"], len(USERS), 0.10), moves


def test_the_order_the_file_lists_variants_in_does_not_matter() -> None:
    listed = Router(RoutingConfig(experiment="e", variants={"champion": 70, "challenger": 30}))
    reversed_ = Router(RoutingConfig(experiment="e", variants={"challenger": 30, "champion": 70}))
    assert [listed.assign(u) for u in USERS[:2000]] == [reversed_.assign(u) for u in USERS[:2000]]


def test_a_new_experiment_name_deals_users_afresh() -> None:
    first = split("tone-1", champion=50, challenger=50)
    second = split("tone-2", champion=50, challenger=50)
    same = sum(first.assign(user) == second.assign(user) for user in USERS)
    assert within(same, len(USERS), 0.5), same  # independent draws agree half of the time


def test_without_a_user_each_request_is_drawn_at_random() -> None:
    router = split(champion=50, challenger=50)
    counts = Counter(router.assign(None) for _ in range(4000))
    assert within(counts["challenger"], 4000, 0.5), counts


def test_a_variant_at_weight_zero_gets_no_users() -> None:
    router = split(champion=100, challenger=0)
    assert {router.assign(user) for user in USERS} == {"champion"}
    assert router.config.primary == ("champion",)
    assert router.config.aliases == ("champion", "challenger")


def user_in_bucket(experiment: str, wanted: int) -> str:
    """A user id that `bucket` puts in bucket `wanted` of `experiment` (searched for)."""
    for i in range(50 * BUCKETS):
        if bucket(experiment, f"u{i}") == wanted:
            return f"u{i}"
    raise AssertionError(f"no user in bucket {wanted}")


def test_users_on_a_range_boundary_land_where_the_documented_ranges_say() -> None:
    """challenger 10 / champion 90, in alphabetical order: challenger owns buckets 0-999 and
    champion 1000-9999; at 0.01%, challenger owns bucket 0 alone."""
    router = split(champion=90, challenger=10)
    expected = {0: "challenger", 999: "challenger", 1000: "champion", 9999: "champion"}
    for wanted, variant in expected.items():
        assert router.assign(user_in_bucket("tone", wanted)) == variant, wanted
    tiny = split(champion=99.99, challenger=0.01)
    assert tiny.assign(user_in_bucket("tone", 0)) == "challenger"
    assert tiny.assign(user_in_bucket("tone", 1)) == "champion"


def test_fractional_weights_down_to_a_hundredth() -> None:
    router = split(champion=99.5, challenger=0.5)
    counts = Counter(router.assign(user) for user in USERS)
    assert within(counts["challenger"], len(USERS), 0.005), counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "experiment: e\nvariants: {champion: 90, challenger: 5}\n",
            "variants: weights sum to 95; they must sum to 100",
        ),
        (
            "experiment: e\nvariants: {champion: 110, challenger: -10}\n",
            "variants.champion: Input should be less than or equal to 100; "
            "variants.challenger: Input should be greater than or equal to 0",
        ),
        (
            "experiment: e\nvariants: {champion: 100}\nshadow: champion\n",
            "shadow: 'champion' is also a variant",
        ),
        ("experiment: e\nvariants: {champion: 100}\nshaddow: challenger\n", "shaddow: unknown key"),
        ("experiment: e\nvariants: {champion: yes}\n", "variants.champion: Input should be a"),
        ("experiment: e\nvariants: {champion: 99.995, b: 0.005}\n", "more than two decimals"),
        ("experiment: e\nvariants: {}\n", "variants: Dictionary should have at least 1 item"),
        ("variants: {champion: 100}\n", "experiment: Field required"),
        ("experiment: override\nvariants: {champion: 100}\n", "'override' is reserved"),
        ("experiment: e\nvariants: {'champion ': 100}\n", "variants.champion .[key]"),
        ("experiment: e\nvariants: [champion]\n", "variants: Input should be a valid dictionary"),
        ("- champion\n", "expected a mapping at the top level"),
        ("experiment: [unclosed\n", "not valid YAML"),
    ],
    ids=[
        "sum",
        "range",
        "shadow-is-a-variant",
        "unknown-key",
        "not-a-number",
        "too-fine",
        "no-variants",
        "no-experiment",
        "reserved-name",
        "bad-alias",
        "list",
        "not-a-mapping",
        "yaml",
    ],
)
def test_a_bad_routing_file_is_refused_naming_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_routing(Settings(routing=path))
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_without_a_file_every_user_is_on_the_model_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/routing.yaml here
    config = read_routing(Settings(model_alias="challenger"))
    assert config == RoutingConfig(experiment="default", variants={"challenger": 100})


def test_configs_routing_yaml_is_read_when_present_and_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """The shipped file documents the default: serving with it is serving without it."""
    shipped = read_routing(Settings(routing=ROOT / "configs" / "routing.yaml"))
    assert shipped == RoutingConfig.single("champion")
    write_routing(tmp_path / "configs" / "routing.yaml", experiment="e", variants={"champion": 100})
    monkeypatch.chdir(tmp_path)
    assert read_routing(Settings()).experiment == "e"


def test_a_routing_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SENTIMENT_ROUTING=.*nope.yaml: no such file"):
        read_routing(Settings(routing=tmp_path / "nope.yaml"))


def test_serve_refuses_a_bad_routing_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    path = write_routing(
        tmp_path / "routing.yaml", experiment="e", variants={"champion": 90, "challenger": 5}
    )
    monkeypatch.setenv("SENTIMENT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SENTIMENT_ROUTING", str(path))
    started: list[Settings] = []
    monkeypatch.setattr("sentiment_mlops.serving.server.run_server", started.append)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1 and started == []
    (line,) = result.stderr.strip().splitlines()
    assert line == f"error: {path}: variants: weights sum to 95; they must sum to 100"
