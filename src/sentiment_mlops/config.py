"""Settings from the environment and training configuration from YAML.

Both are validated here, once, so the rest of the package works with typed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_NAME = "sentiment"
CHAMPION = "champion"
CHALLENGER = "challenger"
# The smallest difference in accuracy an A/B report looks for (`sentiment ab report --mde`).
DEFAULT_MDE = 0.02
DEFAULT_TRAIN_CONFIG = Path("configs/train.yaml")
DEFAULT_ROUTING_CONFIG = Path("configs/routing.yaml")
# The longest lifetime a token may have: minting refuses more, verification refuses a token
# whose `exp` lies further ahead (such an `exp` could not even be held in a datetime).
MAX_TOKEN_TTL_SECONDS = 366 * 24 * 3600
# Training input limits (`SENTIMENT_MAX_CLASSES`, `SENTIMENT_MAX_TRAIN_TEXT_CHARS`). Every
# response carries a probability per class, and the report a class-by-class confusion matrix:
# 5,000 labels made a 216 MB report and hung drawing it. The longest text of the project's
# datasets is an IMDB review of 13,704 characters; a single 200 MB text took 6.6 GB to fit.
DEFAULT_MAX_CLASSES = 100
DEFAULT_MAX_TRAIN_TEXT_CHARS = 100_000
# The prediction log's databases (plain `postgresql://` would make SQLAlchemy look for psycopg 3).
LOG_DATABASE_SCHEMES = ("sqlite", "postgresql+psycopg2")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says which and why."""


class Settings(BaseSettings):
    """Process-wide settings, read from `SENTIMENT_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore")

    var_dir: Path = Path("var")
    model_name: str = MODEL_NAME
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    artifact_root: Path | None = None
    # The prediction log (serving/prediction_log.py); default: a SQLite file under var_dir.
    database_url: str | None = None
    # The log database driver's connect and statement timeouts (PostgreSQL) or busy timeout
    # (SQLite), and how long POST /feedback waits for the log before answering 503.
    database_timeout_seconds: float = Field(default=5.0, gt=0)
    # Rows a worker holds while the log database is slow or down; beyond that new rows are
    # dropped and counted (prediction_log_dropped_total).
    prediction_log_queue_size: int = Field(default=10_000, ge=1)
    # Keep each request's text in the log (off: only its SHA-256 and length are kept).
    prediction_log_texts: bool = False
    # The key of the hash under which the log and the feature store know a user (HMAC-SHA256,
    # subjects.py; at least 32 bytes). Unset: one generated once into <var>/subject_key, right
    # for one host only: replicas, and training with entity features, must share one key.
    subject_key: SecretStr | None = None
    # Rows older than this are deleted by the writer, and feedback for them is refused (404).
    prediction_retention_days: int = Field(default=90, ge=1)
    # How long shutdown waits for the queue to be written; what is left is dropped and counted.
    prediction_log_flush_seconds: float = Field(default=10.0, ge=0)
    data_cache_dir: Path | None = None

    # Feature store (features/, the `features` extra): the Feast repository's folder (its
    # generated feature_store.yaml, registry, Parquet files and SQLite online store; default
    # `<var>/features`), its project name (Feast keeps projects apart in a shared Redis), the
    # online store, and how long serving waits for an online lookup before it answers with
    # the training-time defaults.
    features_dir: Path | None = None
    features_project: str = Field(default="sentiment", pattern=r"^[A-Za-z0-9_]+$")
    features_online_store: Literal["sqlite", "redis"] = "sqlite"
    features_redis: str = "127.0.0.1:6379"
    features_lookup_timeout_seconds: float = Field(default=0.05, gt=0)
    # Feast's registry (the applied definitions) in a database every process shares, as a
    # SQLAlchemy URL (postgresql+psycopg2://...): API pods then read what the materialising
    # job applied without its folder. Unset: registry.db in the repository's folder.
    features_registry: str | None = None

    # Serving
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    # The alias served when there is no routing config (see `routing`).
    model_alias: str = CHAMPION
    # Which aliases answer, in what shares, and which one scores in shadow
    # (serving/routing.py): this file, else configs/routing.yaml if present, else
    # `model_alias` alone. A path given here that does not exist is an error.
    routing: Path | None = None
    # Shadow predictions waiting or running at once per worker; more are dropped and counted.
    shadow_max_in_flight: int = Field(default=32, ge=1)
    reload_interval_seconds: float = Field(default=30.0, gt=0)
    # How long one registry call (resolving an alias, fetching and verifying a version) may
    # take before the server reports it as timed out; also the database driver's connect and
    # statement timeouts, so a call stuck on a frozen store ends on its own.
    registry_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long loading a version (download, verify, compile, warm up; in a child process at
    # low priority) may take before the server reports it as timed out. Longer than the
    # registry's: on a busy machine a swap waits for CPU rather than the requests.
    model_load_timeout_seconds: float = Field(default=120.0, gt=0)
    # How long a starting worker waits for its first model before it listens anyway. With
    # several workers on one socket, a worker that listened before its model was in answered
    # 503 to requests the kernel handed it while its siblings could have served them; an
    # unreachable registry fails the first attempt at once, so the server still listens then.
    startup_model_wait_seconds: float = Field(default=10.0, ge=0)
    max_text_chars: int = Field(default=5000, gt=0)
    max_batch_size: int = Field(default=256, gt=0)
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    # Training refuses more (data.py, before anything is fitted): classes in the training
    # data, and characters in one text (`train_text_limit()`).
    max_classes: int = Field(default=DEFAULT_MAX_CLASSES, ge=2)
    max_train_text_chars: int | None = Field(default=None, gt=0)
    log_texts: bool = False
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)
    # uvicorn's parent kills a worker that does not answer its ping in time, and a freshly
    # spawned worker cannot answer until its imports are done: under CPU load that took over
    # uvicorn's default 5 s, and workers were killed and respawned in a loop for minutes.
    worker_healthcheck_seconds: int = Field(default=60, ge=1)
    # Per worker: a client must send its request headers within header_timeout_seconds, of at
    # most max_header_bytes, and then its body within body_timeout_seconds; an idle kept-alive
    # connection is closed after keep_alive_seconds; at most max_connections are held
    # (lowered at startup to fit the open-file limit). See serving/connections.py.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=65_536, ge=4096)
    keep_alive_seconds: int = Field(default=5, ge=1)
    max_connections: int = Field(default=2048, ge=1)
    # Per worker and client address (0: no cap). Behind a proxy every client has the proxy's
    # address: set it above the proxy's connections to a pod, or 0.
    max_connections_per_address: int = Field(default=256, ge=0)

    # Auth: JWT bearer tokens; on unless explicitly disabled for local work
    auth_disabled: bool = False
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: SecretStr | None = None
    jwt_private_key: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str = "sentiment-mlops"
    jwt_audience: str = "sentiment-api"
    token_ttl_seconds: int = Field(default=3600, gt=0, le=MAX_TOKEN_TTL_SECONDS)
    oauth_clients_file: Path | None = None
    # POST /token, per worker process: failed secrets allowed per client id and per address in
    # a moving window before further attempts are refused (429), even with the right secret;
    # secret checks (scrypt, ~30 ms and 16 MiB each) running at once, and waiting beyond those.
    token_failures_per_client: int = Field(default=5, ge=1)
    token_failures_per_address: int = Field(default=20, ge=1)
    token_failure_window_seconds: int = Field(default=60, ge=1)
    token_checks_concurrent: int = Field(default=2, ge=1)
    token_checks_queued: int = Field(default=8, ge=0)

    @field_validator("database_url")
    @classmethod
    def _log_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0]
        if scheme not in LOG_DATABASE_SCHEMES:
            raise ValueError(
                f"the prediction log needs a {' or '.join(LOG_DATABASE_SCHEMES)} URL, "
                f"not {scheme}://"
            )
        return value

    @field_validator("max_train_text_chars")
    @classmethod
    def _train_on_what_is_served(cls, value: int | None, info: ValidationInfo) -> int | None:
        served = info.data.get("max_text_chars")
        if value is not None and served is not None and value < served:
            raise ValueError(
                f"must be at least SENTIMENT_MAX_TEXT_CHARS ({served}): a text the API "
                "accepts must be one training accepts"
            )
        return value

    def local_url(self) -> str:
        """The server's base URL for a client on the same machine: a wildcard `host` (all
        interfaces, as in a container) is reached on loopback."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        return f"http://{host}:{self.port}"

    def train_text_limit(self) -> int:
        """The longest text training accepts: `SENTIMENT_MAX_TRAIN_TEXT_CHARS`, else
        `DEFAULT_MAX_TRAIN_TEXT_CHARS` or the API's limit if that is longer."""
        return self.max_train_text_chars or max(DEFAULT_MAX_TRAIN_TEXT_CHARS, self.max_text_chars)

    def clients_file(self) -> Path:
        """OAuth2 clients (ids, hashed secrets, scopes) that may ask `POST /token` for tokens."""
        return (self.oauth_clients_file or self.var_dir / "oauth_clients.json").resolve()

    def prediction_log_url(self) -> str:
        """SQLAlchemy URL of the prediction log: `SENTIMENT_DATABASE_URL`, else SQLite."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'predictions.db').resolve()}"

    def dev_secret_file(self) -> Path:
        """Where a development signing secret is generated when none is configured."""
        return (self.var_dir / "dev_jwt_secret").resolve()

    def subject_key_file(self) -> Path:
        """Where a subject key is generated when none is configured."""
        return (self.var_dir / "subject_key").resolve()

    def tracking_uri(self) -> str:
        """MLflow's store: `MLFLOW_TRACKING_URI` if set, else a SQLite file under `var_dir`."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.var_dir / 'mlflow.db').resolve()}"

    def artifact_location(self) -> Path:
        """Where runs store artifacts when the store is a database (not a tracking server)."""
        return (self.artifact_root or self.var_dir / "mlartifacts").resolve()

    def feature_repo_dir(self) -> Path:
        """The Feast repository: feature_store.yaml, registry, offline and online data."""
        return (self.features_dir or self.var_dir / "features").resolve()

    def cache_dir(self) -> Path:
        """Where downloaded datasets are kept."""
        return (self.data_cache_dir or self.var_dir / "datasets").resolve()


def describe_settings_error(error: ValidationError) -> str:
    """One line per invalid setting, named by its environment variable, without its value: a
    value can be a secret (a database URL with its password, a signing key), and pydantic's
    own message quotes it whole."""
    problems = []
    for problem in error.errors(include_url=False, include_input=False, include_context=False):
        field = str(problem["loc"][0]) if problem["loc"] else ""
        variable = f"SENTIMENT_{field.upper()}" if field in Settings.model_fields else field
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{variable}: {message}")
    return "; ".join(problems)


def _ordered(value: tuple[int, int]) -> tuple[int, int]:
    if not 1 <= value[0] <= value[1]:
        raise ValueError("ngram_range must be [low, high] with 1 <= low <= high")
    return value


# sklearn accepts n-gram ranges only as tuples; a YAML list is validated into one.
NgramRange = Annotated[tuple[int, int], AfterValidator(_ordered)]


class VectorizerConfig(BaseModel):
    """Hyperparameters of sklearn's TfidfVectorizer (see its documentation)."""

    model_config = ConfigDict(extra="forbid")

    lowercase: bool = True
    ngram_range: NgramRange = (1, 2)
    min_df: int | float = 2
    max_df: int | float = 1.0
    max_features: int | None = 500_000
    sublinear_tf: bool = True
    binary: bool = False
    use_idf: bool = True
    norm: Literal["l1", "l2"] | None = "l2"
    strip_accents: Literal["ascii", "unicode"] | None = None
    token_pattern: str = r"(?u)\b\w\w+\b"


class ClassifierConfig(BaseModel):
    """Hyperparameters of sklearn's LogisticRegression (see its documentation)."""

    model_config = ConfigDict(extra="forbid")

    C: float = Field(default=10.0, gt=0)
    solver: Literal["lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"] = "lbfgs"
    max_iter: int = Field(default=1000, gt=0)
    class_weight: Literal["balanced"] | None = None
    tol: float = Field(default=1e-4, gt=0)


class PreprocessConfig(BaseModel):
    """Text preprocessing before tokenising (text.py); both off by default."""

    model_config = ConfigDict(extra="forbid")

    normalise: bool = False
    negation: bool = False


class CharVectorizerConfig(BaseModel):
    """Character n-grams within word boundaries (TfidfVectorizer, analyzer `char_wb`), added
    to the word n-grams as a union of the two vectorizers when `enabled`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    lowercase: bool = True
    ngram_range: NgramRange = (2, 5)
    min_df: int | float = 2
    max_df: int | float = 1.0
    max_features: int | None = 500_000
    sublinear_tf: bool = True
    binary: bool = False
    use_idf: bool = True
    norm: Literal["l1", "l2"] | None = "l2"
    weight: float = Field(default=1.0, gt=0)


class NBScalingConfig(BaseModel):
    """NB log-count-ratio feature scaling (nb_scaling.py, the NBSVM recipe) when `enabled`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, ge=0, le=1)


class CalibrationConfig(BaseModel):
    """Probability calibration of the classifier (sklearn's CalibratedClassifierCV)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "sigmoid", "isotonic"] = "none"
    cv: int = Field(default=5, ge=2)


class FeaturesConfig(BaseModel):
    """Entity features from the feature store (features/, the `features` extra) and the
    split. Both need a data file with context columns (time, author, account: the airline
    tweets' with-context.csv). `split: time` tests on the latest `test_size` share of the
    events and trains on the earlier ones, so evaluation never trains on the future."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    split: Literal["random", "time"] = "random"


class TrainConfig(BaseModel):
    """Everything that decides a trained model besides the data: split, seed, pipeline."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    test_size: float = Field(default=0.2, gt=0, lt=1)
    drop_duplicates: bool = True
    n_jobs: int = Field(default=1, ge=1)
    builtin_classes: list[str] | None = Field(default_factory=lambda: ["negative", "positive"])
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    vectorizer: VectorizerConfig = Field(default_factory=VectorizerConfig)
    char_vectorizer: CharVectorizerConfig = Field(default_factory=CharVectorizerConfig)
    nb_scaling: NBScalingConfig = Field(default_factory=NBScalingConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)

    @property
    def needs_context(self) -> bool:
        """Whether the data must carry time, author and account (features/training.py)."""
        return self.features.enabled or self.features.split == "time"

    def flat_params(self) -> dict[str, Any]:
        """Dotted `section.key` parameters, as MLflow logs them."""
        flat: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        return flat


ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def read_config(path: Path, model: type[ConfigModel]) -> ConfigModel:
    """A YAML file validated as `model`; ConfigError naming the file and every bad key."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            else:  # our validators' messages come prefixed
                message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"{path}: {'; '.join(problems)}") from exc


def load_train_config(path: Path | None = None) -> TrainConfig:
    """Read a training config; no path means `configs/train.yaml` if present, else defaults."""
    if path is None:
        if not DEFAULT_TRAIN_CONFIG.is_file():
            return TrainConfig()
        path = DEFAULT_TRAIN_CONFIG
    return read_config(path, TrainConfig)
