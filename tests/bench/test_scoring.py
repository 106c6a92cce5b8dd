"""bench.scoring: a subset of variants, judging a partial run, where the exactly-once wait goes, and
the visibility consumers' stamped lines."""

from __future__ import annotations

import pytest

from bench.scoring import (
    checkpoints_since,
    chosen_variants,
    exactly_once_wait,
    half_rate,
    judge,
    stamped_lines,
    tail_near_checkpoints,
    unsustained,
)


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


def _rate(events_per_s: float, measured_s: float = 12.0) -> dict:
    return {"events_per_s": events_per_s, "measured_s": measured_s}


def test_a_partial_run_is_judged_on_what_it_measured_and_leaves_the_rest_open() -> None:
    results = {
        "throughput": {"rtml_eo": _rate(4000.0), "rtml_alo": _rate(5000.0)},
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
            "rtml_eo": _rate(4000.0), "rtml_alo": _rate(5000.0),
            "stock": _rate(50.0), "loop": _rate(1000.0),
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


def test_a_rate_measured_over_less_than_two_checkpoints_is_left_out_of_the_ratios() -> None:
    results = {
        "throughput": {
            "rtml_eo": _rate(9000.0, measured_s=5.2), "rtml_alo": _rate(13000.0, measured_s=10.0),
            "stock": _rate(100.0, measured_s=3.0), "loop": _rate(2000.0, measured_s=4.0),
        },
        "latency": {},
    }  # fmt: skip
    assert unsustained(results, checkpoint_ms=5000.0) == ["rtml_eo"]
    judged = judge(results, checkpoint_ms=5000.0, deadline_ms=250.0)
    assert judged["ratios"]["rtml_vs_loop"] is None
    assert judged["ratios"]["rtml_vs_stock"] is None
    assert judged["ratios"]["rtml_at_least_once_vs_loop"] == 6.5  # 10.0 s: two intervals
    assert list(judged["unsustained"]) == ["rtml_eo"]
    assert "5.2 s" in judged["unsustained"]["rtml_eo"]
    met = {t["target"]: t["met"] for t in judged["targets"]}
    assert met["events/s rtml / hand-written loop"] is None
    # the loop and the stock variant have no checkpoints: their spans are not judged
    assert unsustained(results, checkpoint_ms=1000.0) == []


def _checkpoint(trigger: int, duration: int) -> dict:
    return {
        "status": "COMPLETED", "trigger_timestamp": trigger,
        "latest_ack_timestamp": trigger + duration, "end_to_end_duration": duration,
    }  # fmt: skip


def test_the_exactly_once_wait_is_split_per_committed_transaction() -> None:
    # checkpoints every 5 s taking 300 ms; each transaction visible 40 ms after its last ack
    overview = {
        "history": [
            _checkpoint(10_000, 300), _checkpoint(15_000, 300), _checkpoint(20_000, 300),
            {"status": "FAILED", "trigger_timestamp": 25_000},
            _checkpoint(4_000, 100),  # before the measurement: ignored
        ]
    }  # fmt: skip
    visible_and_sent = [
        (10_340, 9_990),  # committed by the first checkpoint: no earlier one to compare with
        (15_340, 9_980), (15_345, 12_000), (15_350, 14_990),  # committed by the second
        (20_340, 14_985), (20_350, 19_000),  # by the third
    ]  # fmt: skip
    wait = exactly_once_wait(visible_and_sent, overview, since_ms=5_000)
    assert wait is not None
    assert wait["transactions"] == 2
    assert wait["trigger_interval_ms"]["max"] == 5000
    assert wait["end_to_end_ms"]["max"] == 300
    assert wait["ack_to_visible_ms"]["p50"] == 40
    # the oldest event of each was sent 20 and 15 ms before the previous checkpoint's trigger
    assert wait["sent_before_previous_trigger_ms"]["max"] == 20
    assert wait["sent_before_previous_trigger_ms"]["mean"] == 17.5
    assert wait["oldest_event_wait_ms"]["max"] == 15_340 - 9_980


def test_checkpoints_since_a_time_are_the_completed_ones_or_every_one_triggered() -> None:
    failed = {"status": "FAILED", "trigger_timestamp": 25_000}
    overview = {"history": [_checkpoint(10_000, 300), failed, _checkpoint(4_000, 100)]}
    assert checkpoints_since(overview, 5_000) == [_checkpoint(10_000, 300)]
    assert checkpoints_since(overview, 5_000, completed=False) == [_checkpoint(10_000, 300), failed]
    assert checkpoints_since({}, 5_000) == []


def test_no_committed_transaction_means_no_exactly_once_wait() -> None:
    overview = {"history": [_checkpoint(10_000, 300)]}
    assert exactly_once_wait([(10_340, 9_990)], overview, since_ms=5_000) is None


def test_lines_read_in_chunks_carry_the_stamp_of_the_chunk_that_ended_them() -> None:
    chunks = [(100, b'{"a": 1}\n{"b"'), (105, b": 2}\n"), (110, b"{}\n{"), (120, b"")]
    lines, carry = stamped_lines(chunks)
    assert lines == [(100, b'{"a": 1}'), (105, b'{"b": 2}'), (110, b"{}")]
    assert carry == b"{"
    more, carry = stamped_lines([(130, b'"c": 3}\n')], carry)
    assert more == [(130, b'{"c": 3}')]
    assert carry == b""


def test_latency_runs_at_half_the_measured_rate_and_refuse_an_unknown_one() -> None:
    results = {"throughput": {"loop": {"events_per_s": 3000}, "stalled": {"events_per_s": None}}}
    assert half_rate(results, "loop") == 1500
    with pytest.raises(RuntimeError, match="stalled: the backlog arrived within one poll"):
        half_rate(results, "stalled")


def test_the_tail_near_checkpoints_is_told_from_the_share_those_spans_hold_anyway() -> None:
    triggers = [10_000, 20_000]  # spans (near_ms 500, 1000): 9,500-11,000 and 19,500-21,000
    sent_latency = [
        (9_400, 400),  # over, before the first span
        (9_500, 300),  # over, at its start
        (11_000, 200),  # over, at its end
        (11_001, 90),
        (15_000, 160),  # over, between the spans
        (19_000, 80),
        (20_500, 140),  # not over: 150 is the bound, not 140
        (25_000, 100),
    ]
    tail = tail_near_checkpoints(
        [(sent + latency, sent) for sent, latency in sent_latency], triggers, 150.0
    )
    assert tail == {
        "over_ms": 150.0,
        "near_checkpoint_ms": [-500.0, 1000.0],
        "events_over": 4,
        "share_over": 0.5,
        "near_checkpoint_share_of_those_over": 0.5,  # 9,500 and 11,000
        "near_checkpoint_share_of_all": 0.375,  # and 20,500
    }


def test_a_tail_without_checkpoints_or_events_is_said_plainly() -> None:
    assert tail_near_checkpoints([], [10_000], 150.0) is None
    nothing_near = tail_near_checkpoints([(1_200, 1_000), (2_100, 2_000)], [], 150.0)
    assert nothing_near is not None
    assert nothing_near["events_over"] == 1
    assert nothing_near["near_checkpoint_share_of_those_over"] == 0.0
    assert nothing_near["near_checkpoint_share_of_all"] == 0.0
    none_over = tail_near_checkpoints([(1_100, 1_000)], [1_000], 150.0)
    assert none_over is not None
    assert none_over["near_checkpoint_share_of_those_over"] is None
