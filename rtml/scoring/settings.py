"""`ScoringSettings`: how the scorer batches, bounds, retries and falls back (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringSettings:
    """Everything `Scorer` needs to call one model on a V2 server and fall back when it cannot.

    Times are in milliseconds. The defaults suit a stream scored in Flink on a nearby server: a
    request that has not answered in 100 ms is given up, a whole `score()` call never takes much
    longer than 250 ms, and a server that failed 5 times in a row is left alone for 1 s.
    """

    model_name: str
    feature_names: tuple[str, ...]  # the model's input columns, in the model's order
    base_url: str = "http://127.0.0.1:8080"
    model_version: str | None = None  # None: the version the server routes to (its latest)
    output: str = "predict_proba"  # the V2 output holding the score
    score_column: int = 1  # column of a 2-D output (predict_proba: the positive class)
    sub_batch_size: int = 256  # rows per V2 request
    max_in_flight: int = 4  # V2 requests at once (and keep-alive connections kept)
    request_timeout_ms: float = 100.0  # one attempt: connect, send, answer
    deadline_ms: float = 250.0  # a whole score() call's primary attempts, retries included
    retries: int = 2  # attempts after the first, only for retryable errors, within the deadline
    backoff_base_ms: float = 5.0  # full jitter: retry n waits U(0, min(max, base * 2**(n-1)))
    backoff_max_ms: float = 50.0
    breaker_failure_threshold: int = 5  # consecutive failed requests that open the breaker
    breaker_cooldown_ms: float = 1000.0  # open this long, then half-open
    breaker_half_open_probes: int = 1  # requests let through half-open; all must succeed
    threshold: float = 0.5  # decision = score >= threshold
    connect_timeout_ms: float | None = None  # None: the request timeout

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        names = tuple(self.feature_names)
        object.__setattr__(self, "feature_names", names)
        if not names:
            raise ValueError("feature_names must name at least one feature")
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names has duplicates: {list(names)}")
        if not self.base_url.startswith("http://"):
            raise ValueError(f"base_url must be http://host:port, not {self.base_url!r}")
        for name in ("sub_batch_size", "max_in_flight", "breaker_failure_threshold",
                     "breaker_half_open_probes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        for name in ("request_timeout_ms", "deadline_ms", "backoff_base_ms", "backoff_max_ms",
                     "breaker_cooldown_ms"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.connect_timeout_ms is not None and not self.connect_timeout_ms > 0:
            raise ValueError(f"connect_timeout_ms must be positive, not {self.connect_timeout_ms}")
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must be at least backoff_base_ms")
        if self.score_column < 0:
            raise ValueError(f"score_column must be 0 or more, not {self.score_column}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], not {self.threshold}")
