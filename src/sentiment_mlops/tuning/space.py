"""The search: which settings to try (`configs/tune.yaml`), expanded into numbered trials.

A search space maps dotted `TrainConfig` keys (`vectorizer.ngram_range`, `classifier.C`, or
any key a section gains later, such as `nb_scaling.enabled`) to the values to try. Each value
is checked by building a `TrainConfig` with it, so the search accepts exactly what
`sentiment train` accepts, and a key added to the config is searchable without a change here.
Only keys inside a section are searchable: the top-level ones (seed, test_size, ...) decide
the data, and trials must all be judged on the same rows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sentiment_mlops.config import ConfigError, TrainConfig, read_config

DEFAULT_TUNE_CONFIG = Path("configs/tune.yaml")


class TuneConfig(BaseModel):
    """How to search: grid or random, how many trials, how many folds, which score."""

    model_config = ConfigDict(extra="forbid")

    search: Literal["grid", "random"] = "random"
    # Trials at most. random: this many distinct points of the grid (all of it if smaller);
    # grid: the whole grid, refused if it has more points than this.
    budget: int = Field(default=20, ge=1)
    folds: int = Field(default=3, ge=2)
    # Drives the fold assignment and the random sample (the split and the classifier use the
    # training config's seed).
    seed: int = 42
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    space: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _non_empty(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in value.items() if not values]
        if empty:
            raise ValueError(f"no values to try for {', '.join(empty)}")
        return value

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.space.values())


@dataclass(frozen=True)
class Trial:
    """One point of the space: its number (from 1), the values chosen, and the training
    config they make, or why that combination is not a valid config."""

    number: int
    overrides: dict[str, Any]
    config: TrainConfig | None
    error: str | None = None


def load_tune_config(path: Path | None = None) -> TuneConfig:
    """`path`, else `configs/tune.yaml`: a search needs a space, which has no default."""
    if path is None:
        if not DEFAULT_TUNE_CONFIG.is_file():
            raise ConfigError(
                f"{DEFAULT_TUNE_CONFIG}: not found; pass the search config with --config"
            )
        path = DEFAULT_TUNE_CONFIG
    return read_config(path, TuneConfig)


def with_overrides(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`base` with each dotted `section.key` set, validated as a whole (ValidationError)."""
    raw = base.model_dump()
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        raw[section][key] = value
    return TrainConfig.model_validate(raw)


def check_space(config: TuneConfig, base: TrainConfig, source: str) -> None:
    """Every key names a setting of a config section and every value is valid for it on its
    own; else ConfigError naming `source`, the key and the value. Whether values fit together
    is only known per trial (`expand`)."""
    if not config.space:
        raise ConfigError(f"{source}: space: nothing to search; name at least one setting")
    if config.search == "grid" and config.grid_size() > config.budget:
        raise ConfigError(
            f"{source}: the grid has {config.grid_size()} points, more than the budget of "
            f"{config.budget}: raise the budget (--budget) or use search: random"
        )
    sections = {name for name, value in base.model_dump().items() if isinstance(value, dict)}
    searchable = sorted(k for k in base.flat_params() if k.split(".", 1)[0] in sections)
    problems = []
    for key, values in config.space.items():
        if key not in searchable:
            problems.append(
                f"space.{key}: not a setting of a config section "
                f"(searchable: {', '.join(searchable)})"
            )
            continue
        for value in values:
            try:
                with_overrides(base, {key: value})
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                problems.append(f"space.{key}: {value!r}: {message}")
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")


def expand(config: TuneConfig, base: TrainConfig) -> list[Trial]:
    """The trials of the search, numbered from 1, in a fixed order for a given seed.

    The grid is never listed whole: a random search draws point indices and decodes each one,
    so a space of millions of points costs only the budget.
    """
    keys = list(config.space)
    sizes = [len(config.space[k]) for k in keys]
    total = config.grid_size()
    if config.search == "grid" or config.budget >= total:
        indices: list[int] = list(range(total))
    else:
        indices = random.Random(config.seed).sample(range(total), config.budget)
    trials = []
    for number, index in enumerate(indices, start=1):
        choice = {}
        for key, size in zip(reversed(keys), reversed(sizes), strict=True):
            index, position = divmod(index, size)
            choice[key] = config.space[key][position]
        overrides = {key: choice[key] for key in keys}
        try:
            trials.append(Trial(number, overrides, with_overrides(base, overrides)))
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            trials.append(Trial(number, overrides, None, f"invalid combination: {errors}"))
    return trials
