"""Which failed V2 calls are retried, and how long to wait first (pure functions).

Retried: connection errors (refused, reset, dropped mid-answer), timeouts, and the HTTP statuses
that say "not now" (429, 502, 503, 504). Never retried: other 4xx (the request is wrong and will be
wrong again), 500 (MLServer and KServe answer 500 when the model itself raises on the input, which
a retry repeats; a crashed server shows up as refused connections instead), and an answer with
the wrong schema or shape. Every failure, retried or not, counts towards the circuit breaker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rtml.scoring.settings import ScoringSettings

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Below this, an attempt cannot even connect and answer on loopback: not worth starting.
MIN_ATTEMPT_MS = 2.0


class FailureKind(enum.StrEnum):
    CONNECT = "connect"  # refused, reset, or dropped before a complete answer
    TIMEOUT = "timeout"  # no complete answer within the attempt's time
    HTTP = "http"  # an HTTP error status
    SCHEMA = "schema"  # 200, but not a usable V2 answer (outputs, shape, values)


@dataclass(frozen=True)
class Failure:
    """Why one V2 request failed, in words fit for a prediction's `error`."""

    kind: FailureKind
    detail: str
    status: int | None = None

    def describe(self) -> str:
        if self.kind is FailureKind.HTTP:
            return f"HTTP {self.status}: {self.detail}"
        if self.kind is FailureKind.TIMEOUT:
            return f"timeout after {self.detail}"
        return f"{self.kind.value}: {self.detail}"


def retryable(failure: Failure) -> bool:
    """Whether another attempt may succeed where this one failed."""
    if failure.kind in (FailureKind.CONNECT, FailureKind.TIMEOUT):
        return True
    if failure.kind is FailureKind.HTTP:
        return failure.status in RETRYABLE_STATUSES
    return False


def backoff_ms(retry: int, settings: ScoringSettings, rand: float) -> float:
    """Milliseconds to wait before retry number `retry` (1, 2, ...): exponential, full jitter.

    Drawn uniformly from [0, min(backoff_max_ms, backoff_base_ms * 2**(retry-1))) with `rand` in
    [0, 1): scorers that failed together spread their retries over the whole window.
    """
    if retry < 1:
        raise ValueError(f"retries count from 1, not {retry}")
    ceiling = min(settings.backoff_max_ms, settings.backoff_base_ms * 2.0 ** min(retry - 1, 60))
    return ceiling * rand


def next_retry_delay_ms(
    failure: Failure,
    retries_done: int,
    remaining_ms: float,
    settings: ScoringSettings,
    rand: float,
) -> float | None:
    """How long to wait before retrying, or None: give up (not retryable, no retries or time left).

    `remaining_ms` is what is left of the call's deadline now; a retry must still be able to make
    an attempt of at least MIN_ATTEMPT_MS after its backoff.
    """
    if not retryable(failure) or retries_done >= settings.retries:
        return None
    delay = backoff_ms(retries_done + 1, settings, rand)
    if remaining_ms - delay < MIN_ATTEMPT_MS:
        return None
    return delay
