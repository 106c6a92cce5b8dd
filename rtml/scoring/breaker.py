"""A circuit breaker in front of the model server (pure state machine, injectable clock).

closed --N consecutive failures--> open --cool-down--> half-open --probes succeed--> closed
                                     ^                      |
                                     +----- a probe fails --+

Open, every request is refused at once (the rows go down the fallback chain without waiting).
Half-open, only `probes` requests are let through; the others are refused as if open. When they
all succeed the breaker closes, the first that fails opens it for another cool-down.
Not thread-safe: the scorer calls it from its one event loop thread.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Numbered for a Flink gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Admission(enum.Enum):
    """What may happen to a request now, decided in one step (`CircuitBreaker.admit`)."""

    PASS = "pass"  # closed: send it
    PROBE = "probe"  # half-open: send it as one of the probes
    REFUSE = "refuse"  # open, or half-open with its probes out: do not send it


class CircuitBreaker:
    """Counts consecutive failures; refuses calls for a cool-down once there are too many."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 1.0,
        probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or probes < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold and probes must be >= 1, cooldown_s positive")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.probes = probes
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._probes_out = 0  # half-open: requests let through, not answered yet
        self._probes_ok = 0
        self.opened = 0  # times it opened (a counter for metrics)

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down is over reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._probes_out = self._probes_ok = 0
        return self._state

    def admit(self) -> Admission:
        """Whether a request may go out now, and as what. One call reads the state once, so a
        cool-down that ends meanwhile cannot make a probe look like a plain request. Each PASS or
        PROBE must be followed by one `record_*` call."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Admission.PASS
        if state is BreakerState.HALF_OPEN and self._probes_out + self._probes_ok < self.probes:
            self._probes_out += 1
            return Admission.PROBE
        return Admission.REFUSE

    def record_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            self._probes_ok += 1
            if self._probes_ok >= self.probes:
                self._close()
        elif self._state is BreakerState.CLOSED:
            self._failures = 0
        # OPEN: an answer to a request sent before it opened changes nothing

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = self._probes_out = self._probes_ok = 0
        self.opened += 1

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = self._probes_out = self._probes_ok = 0
