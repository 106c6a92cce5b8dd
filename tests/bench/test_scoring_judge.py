"""bench.scoring: choosing a subset of variants, and judging a run that measured only some."""

from __future__ import annotations

import pytest

from bench.scoring import chosen_variants, judge


def test_variants_run_in_the_fixed_order_whatever_order_they_are_named_in() -> None:
    assert chosen_variants("rtml_alo, rtml_eo") == ["rtml_eo", "rtml_alo"]
    assert chosen_variants("loop,stock,rtml_eo,rtml_alo,stalled") == [
        "rtml_eo", "rtml_alo", "stock", "loop", "stalled"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("names", "says"),
    [("rtml_eo,flink", "flink"), ("", "choose from"), ("stalled", "add rtml_alo")],
)
def test_unknown_variants_and_a_stalled_run_without_its_rate_are_refused(
    names: str, says: str
) -> None:
    with pytest.raises(SystemExit, match=says):
        chosen_variants(names)


def _latency(p99: float, scoring_p99: float | None = None) -> dict:
    run: dict = {"latency_ms": {"p99": p99}}
    if scoring_p99 is not None:
        run["scoring_latency_ms"] = {"p99": scoring_p99}
    return run


def test_a_partial_run_is_judged_on_what_it_measured_and_leaves_the_rest_open() -> None:
    results = {
        "throughput": {"rtml_eo": {"events_per_s": 4000.0}, "rtml_alo": {"events_per_s": 5000.0}},
        "latency": {"rtml_eo": _latency(5200.0), "rtml_alo": _latency(180.0, 20.0)},
    }
    judged = judge(results, checkpoint_ms=5000.0, deadline_ms=250.0)
    assert judged["ratios"]["rtml_vs_stock"] is None
    assert judged["ratios"]["rtml_vs_loop"] is None
    met = {t["target"]: t["met"] for t in judged["targets"]}
    assert met["p99 ms, rtml exactly-once, half max rate"] is True  # 5200 < 5300
    assert met["p99 ms, rtml at-least-once, half max rate"] is False  # 180 >= 150
    assert met["events/s rtml / stock per-record"] is None
    assert met["events/s rtml / hand-written loop"] is None
    assert met["p99 ms end to end, at-least-once, server stalled"] is None


def test_a_full_run_is_judged_on_every_target() -> None:
    results = {
        "throughput": {
            "rtml_eo": {"events_per_s": 4000.0}, "rtml_alo": {"events_per_s": 5000.0},
            "stock": {"events_per_s": 50.0}, "loop": {"events_per_s": 1000.0},
        },
        "latency": {
            "rtml_eo": _latency(5400.0), "rtml_alo": _latency(140.0, 20.0),
            "stock": _latency(5000.0), "loop": _latency(1000.0),
            "stalled": _latency(300.0, 110.0),
        },
    }  # fmt: skip
    judged = judge(results, checkpoint_ms=5000.0, deadline_ms=250.0)
    assert judged["ratios"]["rtml_vs_stock"] == 80.0
    assert judged["ratios"]["rtml_vs_loop"] == 4.0
    # stock ratio, loop ratio, exactly-once p99, at-least-once p99, stalled scoring, stalled end
    # to end (limit 250 + 50 + the healthy run's 140 - 20 = 420 ms)
    assert [t["met"] for t in judged["targets"]] == [True, False, False, True, True, True]
