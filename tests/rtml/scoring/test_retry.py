"""Which failures are retried, and the backoff's bounds."""

from __future__ import annotations

import pytest

from rtml.scoring.retry import (
    MIN_ATTEMPT_MS,
    Failure,
    FailureKind,
    backoff_ms,
    next_retry_delay_ms,
    retryable,
)
from rtml.scoring.settings import ScoringSettings

SETTINGS = ScoringSettings("m", ("a",), retries=3, backoff_base_ms=10, backoff_max_ms=50)


@pytest.mark.parametrize(
    "failure, expected",
    [
        (Failure(FailureKind.CONNECT, "refused"), True),
        (Failure(FailureKind.TIMEOUT, "100 ms"), True),
        (Failure(FailureKind.HTTP, "slow down", 429), True),
        (Failure(FailureKind.HTTP, "bad gateway", 502), True),
        (Failure(FailureKind.HTTP, "unavailable", 503), True),
        (Failure(FailureKind.HTTP, "gateway timeout", 504), True),
        (Failure(FailureKind.HTTP, "model raised", 500), False),
        (Failure(FailureKind.HTTP, "bad shape", 400), False),
        (Failure(FailureKind.HTTP, "no such model", 404), False),
        (Failure(FailureKind.HTTP, "too large", 413), False),
        (Failure(FailureKind.HTTP, "unprocessable", 422), False),
        (Failure(FailureKind.SCHEMA, "3 scores for 4 rows"), False),
    ],
)
def test_retry_classification(failure: Failure, expected: bool) -> None:
    assert retryable(failure) is expected


def test_backoff_is_full_jitter_under_an_exponential_capped_ceiling() -> None:
    for retry, ceiling in [(1, 10), (2, 20), (3, 40), (4, 50), (10, 50), (500, 50)]:
        assert backoff_ms(retry, SETTINGS, 0.0) == 0.0
        assert backoff_ms(retry, SETTINGS, 0.5) == pytest.approx(ceiling / 2)
        assert backoff_ms(retry, SETTINGS, 0.999999) < ceiling
        assert backoff_ms(retry, SETTINGS, 0.999999) == pytest.approx(ceiling, rel=1e-5)
    with pytest.raises(ValueError):
        backoff_ms(0, SETTINGS, 0.5)


def test_next_retry_stops_after_the_configured_retries() -> None:
    timeout = Failure(FailureKind.TIMEOUT, "100 ms")
    delays = [next_retry_delay_ms(timeout, done, 1000.0, SETTINGS, 0.5) for done in range(5)]
    assert delays == [5.0, 10.0, 20.0, None, None]


def test_next_retry_never_for_non_retryable_failures() -> None:
    schema = Failure(FailureKind.SCHEMA, "no outputs")
    assert next_retry_delay_ms(schema, 0, 1000.0, SETTINGS, 0.0) is None


def test_next_retry_never_beyond_the_deadline() -> None:
    refused = Failure(FailureKind.CONNECT, "refused")
    assert next_retry_delay_ms(refused, 0, MIN_ATTEMPT_MS + 5.0, SETTINGS, 0.5) == 5.0
    assert next_retry_delay_ms(refused, 0, MIN_ATTEMPT_MS + 4.9, SETTINGS, 0.5) is None
    assert next_retry_delay_ms(refused, 0, 1.0, SETTINGS, 0.0) is None
    assert next_retry_delay_ms(refused, 0, -3.0, SETTINGS, 0.0) is None


def test_failure_descriptions() -> None:
    assert Failure(FailureKind.HTTP, "unavailable", 503).describe() == "HTTP 503: unavailable"
    assert Failure(FailureKind.TIMEOUT, "200 ms").describe() == "timeout after 200 ms"
    assert Failure(FailureKind.CONNECT, "refused").describe() == "connect: refused"
