"""Which variant answers a request: an experiment's aliases with their shares of users, sticky
per user, and an optional shadow alias that scores the same texts off the response path.

The routing config (`configs/routing.yaml`, or the file `SENTIMENT_ROUTING` names):

    experiment: tone-2026-07          # the salt of the assignment, and the prediction log's name
    variants: {champion: 90, challenger: 10}   # percent of users; must sum to 100
    shadow: null                      # or an alias that is not a variant

A user (the request's `user_id`, else the token's subject) is hashed with the experiment name
as salt into one of `BUCKETS` buckets, and the variants own consecutive ranges of buckets in
the alphabetical order of their aliases, whatever order the file lists them in. So a user
keeps their variant while the experiment and the weights stay; a new experiment name deals
the users afresh; and weight moved between two variants next to each other in that order
moves only the users who must move: challenger 10 -> 20 moves a tenth of the users, every one
of them from champion to challenger. (With three or more variants, weight moved between two
that are not neighbours also shifts the ones between them.) Without a key, as with auth
disabled and no `user_id`, a bucket is drawn at random for each request.

A variant with weight 0 gets no users but is loaded: a request whose token has the `admin`
scope may ask for it (or for any alias the config names) with `variant`. Those predictions
are not the experiment's: they carry the experiment name `OVERRIDE_EXPERIMENT`.
"""

from __future__ import annotations

import bisect
import hashlib
import secrets
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from sentiment_mlops.config import DEFAULT_ROUTING_CONFIG, ConfigError, Settings, read_config
from sentiment_mlops.serving.predictions import OVERRIDE_EXPERIMENT

BUCKETS = 10_000  # weights are percentages with two decimals at most
DEFAULT_EXPERIMENT = "default"

Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Weight = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]


class RoutingConfig(BaseModel):
    """An experiment: the aliases that answer, their percentages, and the shadow alias."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    variants: dict[Alias, Weight] = Field(min_length=1)
    shadow: Alias | None = None

    @field_validator("experiment")
    @classmethod
    def _not_reserved(cls, experiment: str) -> str:
        if experiment == OVERRIDE_EXPERIMENT:
            raise ValueError(f"'{OVERRIDE_EXPERIMENT}' is reserved for admin-chosen variants")
        return experiment

    @field_validator("variants")
    @classmethod
    def _percentages(cls, variants: dict[str, float]) -> dict[str, float]:
        for alias, weight in variants.items():
            if abs(weight * 100 - round(weight * 100)) > 1e-6:
                raise ValueError(f"{alias}: {weight:g} has more than two decimals")
        total = sum(round(weight * 100) for weight in variants.values())
        if total != BUCKETS:
            raise ValueError(f"weights sum to {total / 100:g}; they must sum to 100")
        return variants

    @field_validator("shadow")
    @classmethod
    def _not_a_variant(cls, shadow: str | None, info: ValidationInfo) -> str | None:
        if shadow is not None and shadow in info.data.get("variants", {}):
            raise ValueError(
                f"'{shadow}' is also a variant; the shadow scores the requests other "
                "variants answer, so it must be another alias"
            )
        return shadow

    @classmethod
    def single(cls, alias: str) -> RoutingConfig:
        """Every user on `alias`, no shadow: the routing without a config file."""
        return cls(experiment=DEFAULT_EXPERIMENT, variants={alias: 100})

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every alias the config names, the ones that get users first."""
        ranked = sorted(self.variants, key=lambda alias: self.variants[alias] == 0)
        return (*ranked, *([self.shadow] if self.shadow else []))

    @property
    def primary(self) -> tuple[str, ...]:
        """The variants that get users (weight above 0): each must have a model to serve."""
        return tuple(alias for alias, weight in self.variants.items() if weight > 0)


def bucket(experiment: str, key: str) -> int:
    """The user's bucket in `experiment`, 0 <= bucket < BUCKETS, the same on every server."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Router:
    """Assigns users to the variants of one routing config."""

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._uppers: list[int] = []
        self._aliases: list[str] = []
        upper = 0
        for alias in sorted(config.variants):
            share = round(config.variants[alias] * 100)
            if share:
                upper += share
                self._uppers.append(upper)
                self._aliases.append(alias)

    def assign(self, key: str | None) -> str:
        """The variant for the user `key`; None (no user known) draws one at random."""
        point = (
            bucket(self.config.experiment, key) if key is not None else secrets.randbelow(BUCKETS)
        )
        return self._aliases[bisect.bisect_right(self._uppers, point)]


def read_routing(settings: Settings) -> RoutingConfig:
    """The routing config in effect: `SENTIMENT_ROUTING`'s file (which must exist), else
    `configs/routing.yaml` if there is one, else `SENTIMENT_MODEL_ALIAS` for every user.
    ConfigError naming the file and each bad key."""
    if settings.routing is not None:
        if not settings.routing.is_file():
            raise ConfigError(f"SENTIMENT_ROUTING={settings.routing}: no such file")
        return read_config(settings.routing, RoutingConfig)
    if DEFAULT_ROUTING_CONFIG.is_file():
        return read_config(DEFAULT_ROUTING_CONFIG, RoutingConfig)
    try:
        return RoutingConfig.single(settings.model_alias)
    except ValidationError as exc:
        raise ConfigError(
            f"SENTIMENT_MODEL_ALIAS={settings.model_alias!r} is not an alias name: "
            "letters, digits, '_' and '-', at most 64"
        ) from exc
