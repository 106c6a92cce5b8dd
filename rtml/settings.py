"""Typed settings for the local stack and the jobs, from one place.

Every field can be overridden by an environment variable `RTML_<FIELD>` (e.g. `RTML_KAFKA_PORT`);
`rtml --help` lists them. Paths default to folders under the repository's `.rtml/`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rtml import processes

if TYPE_CHECKING:
    from rtml.scoring.settings import ScoringSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# How long a scoring batch (one Python bundle, one V2 request) may wait to fill, by delivery
# (README, "The changelog state backend and 30 ms batches").
EXACTLY_ONCE_LINGER_MS = 50
AT_LEAST_ONCE_LINGER_MS = 30


class StackSettings(BaseSettings):
    """Where the local stack lives and which loopback ports it uses."""

    model_config = SettingsConfigDict(env_prefix="RTML_", frozen=True, extra="ignore")

    home: Path = Field(PROJECT_ROOT / ".rtml", description="generated files: jars, venvs, models")
    runtime_dir: Path | None = Field(
        None, description="data, logs, pids and checkpoints of one stack (default: HOME/stack)"
    )
    flink_conf_dir: Path = Field(
        PROJECT_ROOT / "flink-conf", description="checked-in Flink configuration (config.yaml)"
    )
    python: Path = Field(
        Path(sys.executable), description="Python of the venv that runs jobs and Flink's workers"
    )

    kafka_port: int = Field(9092, description="Kafka broker (PLAINTEXT)")
    kafka_controller_port: int = Field(9093, description="Kafka KRaft controller")
    redis_port: int = 6379
    flink_rest_port: int = Field(8081, description="Flink REST API and web UI")
    flink_rpc_port: int = Field(6123, description="Flink JobManager RPC")
    model_http_port: int = Field(8080, description="model server, Open Inference Protocol (REST)")
    model_grpc_port: int = 8001
    model_metrics_port: int = 8002

    start_timeout_s: float = Field(120.0, description="how long `stack up` waits for each service")

    @cached_property
    def runtime(self) -> Path:
        """The folder of this stack's data, logs and pid files."""
        return (self.runtime_dir or self.home / "stack").resolve()

    @property
    def jars_dir(self) -> Path:
        return self.home / "jars"

    @property
    def mlserver_venv(self) -> Path:
        return self.home / "venvs" / "mlserver"

    @property
    def model_repo(self) -> Path:
        return self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.runtime / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.runtime / "run"

    @property
    def checkpoints_uri(self) -> str:
        return (self.runtime / "checkpoints").as_uri()

    @property
    def savepoints_uri(self) -> str:
        return (self.runtime / "savepoints").as_uri()

    @property
    def changelog_uri(self) -> str:
        """Where the changelog state backend writes its log (state.changelog.dstl.dfs.base-path)."""
        return (self.runtime / "changelog").as_uri()

    @property
    def kafka_bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.kafka_port}"

    @property
    def flink_rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.flink_rest_port}"

    @property
    def model_url(self) -> str:
        return f"http://{LOOPBACK}:{self.model_http_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.redis_port}/0"


PORT_FIELDS = tuple(name for name in StackSettings.model_fields if name.endswith("_port"))


def ephemeral_stack_settings(runtime_dir: Path, **overrides: object) -> StackSettings:
    """Settings for a throw-away stack (tests, benchmarks): its own folder and free ports.

    Jars, venvs and models stay shared under HOME.
    """
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORT_FIELDS):
        ports = {name: processes.free_port() for name in PORT_FIELDS}
    return StackSettings(runtime_dir=runtime_dir, **ports, **overrides)  # type: ignore[arg-type]


def settings_env(settings: StackSettings) -> dict[str, str]:
    """Environment variables that make `rtml` commands and jobs use `settings`'s stack."""
    env = {f"RTML_{name.upper()}": str(getattr(settings, name)) for name in PORT_FIELDS}
    env["RTML_RUNTIME_DIR"] = str(settings.runtime)
    env["RTML_HOME"] = str(settings.home)
    env["RTML_FLINK_CONF_DIR"] = str(settings.flink_conf_dir)
    return env


class JobSettings(BaseSettings):
    """Settings every job shares: where Kafka is and how the job is run."""

    model_config = SettingsConfigDict(env_prefix="RTML_", frozen=True, extra="ignore")

    kafka_port: int = 9092
    kafka_bootstrap: str = Field(
        "", description="Kafka bootstrap servers (default: the local stack's broker)"
    )
    jars_dir: Path = Field(PROJECT_ROOT / ".rtml" / "jars", description="resolved connector jars")
    flink_conf_dir: Path = PROJECT_ROOT / "flink-conf"
    parallelism: int = 1
    target: Literal["local", "cluster"] = Field(
        "local", description="local: embedded MiniCluster; cluster: submitted by `rtml submit`"
    )
    detached: bool = Field(
        False, description="return once the job is submitted instead of waiting for it to end"
    )
    restore_from: str = Field(
        "", description="the savepoint `rtml submit --from-savepoint` restores (set by rtml)"
    )

    @model_validator(mode="after")
    def _local_broker_by_default(self) -> JobSettings:
        if not self.kafka_bootstrap:
            # frozen model: set once, here, before anyone reads it
            object.__setattr__(self, "kafka_bootstrap", f"{LOOPBACK}:{self.kafka_port}")
        return self


class FeatureJobSettings(JobSettings):
    """Feature jobs: where the online store is, and how their Kafka ids are named."""

    redis_port: int = 6379
    redis_url: str = Field("", description="online store (default: the local stack's Redis)")
    features_dir: Path = Field(
        PROJECT_ROOT / "sql" / "features", description="where feature set definitions live"
    )
    features_id_prefix: str = Field(
        "rtml-features", description="consumer group and transactional id prefix of feature jobs"
    )
    online_store: bool = Field(
        True,
        description="write features to Redis (off: Kafka features topic only, e.g. to measure)",
    )
    offline_state: Literal["heap", "rocksdb"] = Field(
        "heap",
        description="state of offline runs (backtests, training sets): heap (fast, must fit in "
        "the JVM's memory) or rocksdb (spills to disk, about half as fast)",
    )

    @model_validator(mode="after")
    def _local_redis_by_default(self) -> FeatureJobSettings:
        if not self.redis_url:
            object.__setattr__(self, "redis_url", f"redis://{LOOPBACK}:{self.redis_port}/0")
        return self


class SmokeJobSettings(JobSettings):
    """The smoke job: counts events per key per tumbling window."""

    smoke_input_topic: str = "rtml.smoke.events"
    smoke_output_topic: str = "rtml.smoke.counts"
    smoke_dead_letter_topic: str = "rtml.smoke.dead-letter"
    smoke_window_seconds: int = 10
    smoke_out_of_orderness_seconds: int = 2
    smoke_idle_timeout_seconds: int = Field(
        0,
        description="mark a partition idle after this many quiet seconds (0: never); idleness lets "
        "windows fire without traffic everywhere, but a partition that resumes may be late",
    )
    smoke_group_id: str = "rtml-smoke"
    smoke_transactional_id_prefix: str = "rtml-smoke"
    smoke_partitions: int = 2


class ScoringJobSettings(JobSettings):
    """Scoring jobs: the model server, the model, and how calls to it are bounded (RTML_SCORING_*).

    `scoring_settings(feature_names)` turns them into the `rtml.scoring.ScoringSettings` a
    `Scorer` takes; the feature names come from the model's metadata.
    """

    model_http_port: int = 8080
    model_url: str = Field("", description="V2 model server (default: the local stack's)")
    scoring_model: str = Field("fraud", description="model name on the V2 server")
    scoring_model_version: str = Field("", description="model version (empty: the server's latest)")
    scoring_fallback_model: Path | None = Field(
        None, description="folder of the local fallback model (model.joblib + metadata.json)"
    )
    scoring_sub_batch_size: int = Field(256, description="rows per V2 request")
    scoring_max_in_flight: int = Field(4, description="V2 requests at once")
    scoring_request_timeout_ms: float = Field(100.0, description="one V2 request, connect included")
    scoring_deadline_ms: float = Field(
        250.0, description="a whole batch's V2 attempts, retries included; then the fallbacks"
    )
    scoring_retries: int = Field(2, description="retries of retryable failures, within deadline")
    scoring_backoff_base_ms: float = 5.0
    scoring_backoff_max_ms: float = 50.0
    scoring_breaker_failure_threshold: int = Field(
        5, description="consecutive failed requests that open the circuit breaker"
    )
    scoring_breaker_cooldown_ms: float = Field(1000.0, description="how long the breaker is open")
    scoring_breaker_half_open_probes: int = 1
    scoring_threshold: float = Field(
        0.5, description="decision = score >= threshold (unset: the model metadata's, else 0.5)"
    )
    scoring_featureset: str = Field("fraud_card", description="feature set the job scores")
    scoring_model_repo: Path | None = Field(
        None, description="model repository with metadata.json per version (default: HOME/models)"
    )
    scoring_predictions_topic: str = Field(
        "", description="predictions topic (default: rtml.predictions.<model>)"
    )
    scoring_dead_letter_topic: str = Field(
        "", description="the scoring job's dead letters (default: rtml.scoring.<model>.dead-letter)"
    )
    scoring_models_topic: str = Field(
        "rtml.models.current", description="log-compacted topic naming each model's current version"
    )
    scoring_follow_versions: bool = Field(
        True, description="follow the models topic (off: the configured version only)"
    )
    scoring_id_prefix: str = Field(
        "rtml-scoring", description="consumer group and transactional id prefix of scoring jobs"
    )
    scoring_batch_size: int = Field(
        1000, description="rows per Arrow batch = per score() call (and per Python bundle)"
    )
    scoring_linger_ms: int | None = Field(
        None,
        description="a batch is scored after this long even if not full (default: "
        f"{EXACTLY_ONCE_LINGER_MS} ms exactly-once, {AT_LEAST_ONCE_LINGER_MS} ms at-least-once)",
    )
    scoring_job_name: str = Field("", description="Flink job name (default: rtml-scoring-<model>)")
    scoring_delivery: Literal["exactly-once", "at-least-once"] = Field(
        "exactly-once",
        description="predictions sink: exactly-once (visible to read_committed consumers at each "
        "checkpoint) or at-least-once (visible at once; duplicates after a restart)",
    )

    @model_validator(mode="after")
    def _local_model_server_by_default(self) -> ScoringJobSettings:
        if not self.model_url:
            object.__setattr__(self, "model_url", f"http://{LOOPBACK}:{self.model_http_port}")
        return self

    @model_validator(mode="after")
    def _linger_by_delivery(self) -> ScoringJobSettings:
        # Exactly-once predictions wait for the next checkpoint whatever the batches do, so
        # longer batches buy rate for free; at-least-once ones wait for their batch's linger.
        if self.scoring_linger_ms is None:
            linger = (
                EXACTLY_ONCE_LINGER_MS
                if self.scoring_delivery == "exactly-once"
                else AT_LEAST_ONCE_LINGER_MS
            )
            object.__setattr__(self, "scoring_linger_ms", linger)
        return self

    def scoring_settings(self, feature_names: Sequence[str]) -> ScoringSettings:
        """The scorer's settings for a model with these input features (validated there)."""
        from rtml.scoring.settings import ScoringSettings  # lazy: keeps settings import-light

        return ScoringSettings(
            model_name=self.scoring_model,
            feature_names=tuple(feature_names),
            base_url=self.model_url,
            model_version=self.scoring_model_version or None,
            sub_batch_size=self.scoring_sub_batch_size,
            max_in_flight=self.scoring_max_in_flight,
            request_timeout_ms=self.scoring_request_timeout_ms,
            deadline_ms=self.scoring_deadline_ms,
            retries=self.scoring_retries,
            backoff_base_ms=self.scoring_backoff_base_ms,
            backoff_max_ms=self.scoring_backoff_max_ms,
            breaker_failure_threshold=self.scoring_breaker_failure_threshold,
            breaker_cooldown_ms=self.scoring_breaker_cooldown_ms,
            breaker_half_open_probes=self.scoring_breaker_half_open_probes,
            threshold=self.scoring_threshold,
        )


class BacktestSettings(ScoringJobSettings):
    """`rtml backtest`: the live scoring job's settings (scorer, models topic, predictions topic,
    fallback model), plus where feature sets and backtest outputs live (RTML_BACKTEST_*)."""

    redis_port: int = 6379
    redis_url: str = Field(
        "", description="Redis for --redis-prefix outputs (default: the local stack's)"
    )
    features_dir: Path = Field(
        PROJECT_ROOT / "sql" / "features", description="where feature set definitions live"
    )
    backtest_dir: Path = Field(
        PROJECT_ROOT / ".rtml" / "backtests", description="default parent of --out (one per run)"
    )
    backtest_read_timeout_s: float = Field(
        60.0, description="give up reading a topic to its end after this long without progress"
    )
    backtest_scoring_processes: int = Field(
        0,
        ge=0,
        description="processes scoring the models at once (0: one per model, at most one per "
        "core; 1: one model after the other in the backtest's own process)",
    )

    @model_validator(mode="after")
    def _local_redis_by_default(self) -> BacktestSettings:
        if not self.redis_url:
            object.__setattr__(self, "redis_url", f"redis://{LOOPBACK}:{self.redis_port}/0")
        return self

    def feature_job_settings(self) -> FeatureJobSettings:
        """The settings an offline feature run takes (same broker, jars, Flink config)."""
        return FeatureJobSettings(
            kafka_bootstrap=self.kafka_bootstrap, jars_dir=self.jars_dir,
            flink_conf_dir=self.flink_conf_dir, parallelism=self.parallelism,
            features_dir=self.features_dir, redis_url=self.redis_url, online_store=False,
        )  # fmt: skip
