"""Circuit breaker transitions, driven by a fake clock."""

from __future__ import annotations

import pytest

from rtml.scoring.breaker import Admission, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: FakeClock, probes: int = 1) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, cooldown_s=2.0, probes=probes, clock=clock)


def _opened(clock: FakeClock, probes: int = 1) -> CircuitBreaker:
    """A breaker that three failures in a row have just opened (for a 2 s cool-down)."""
    breaker = _breaker(clock, probes)
    for _ in range(3):
        breaker.record_failure()
    return breaker


def test_opens_after_threshold_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.admit() is Admission.PASS
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit() is Admission.REFUSE
    assert breaker.opened == 1


def test_half_open_after_cooldown_lets_one_probe_and_closes_on_success() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 1.999
    assert breaker.state is BreakerState.OPEN and breaker.admit() is Admission.REFUSE
    clock.now += 0.001
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is Admission.PROBE
    assert breaker.admit() is Admission.REFUSE  # others wait for it
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit() is breaker.admit() is Admission.PASS


def test_failed_probe_opens_again_for_a_full_cooldown() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 2.0
    assert breaker.admit() is Admission.PROBE
    clock.now += 0.5  # the probe took a while
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.opened == 2
    clock.now += 1.9
    assert breaker.admit() is Admission.REFUSE
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_several_probes_must_all_succeed() -> None:
    clock = FakeClock()
    breaker = _opened(clock, probes=2)
    clock.now += 2.0
    assert [breaker.admit() for _ in range(3)] == [Admission.PROBE] * 2 + [Admission.REFUSE]
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_late_answers_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    breaker.record_success()  # a request sent before it opened
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    clock.now += 2.0
    assert breaker.state is BreakerState.HALF_OPEN


def test_state_numbers_for_gauges() -> None:
    assert [int(s) for s in BreakerState] == [0, 1, 2]


@pytest.mark.parametrize("args", [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)])
def test_rejects_bad_parameters(args: tuple) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(*args)


def test_a_cool_down_that_ends_between_calls_admits_a_probe_not_a_plain_request() -> None:
    # The scorer once read `state` and then asked separately whether to send: a cool-down ending
    # between the two sent a probe in the foreground, its batch waiting for a possibly dead server.
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 1.999
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.001  # the cool-down ends before the next call reads the state
    assert breaker.admit() is Admission.PROBE
