"""bench.scoring's hand-written loop does the Flink job's work: every fraud_card feature."""

from __future__ import annotations

import math

from integration.test_features_job import expected_card_features

from bench.scoring import FEATURES, CardWindows
from rtml.generators import GENERATORS


def test_the_loop_computes_every_fraud_card_feature_like_the_plain_python_reference() -> None:
    # a dense history (5 transactions/s over 50 cards): windows hold many events, some empty out
    events = GENERATORS["fraud"].generate(
        3000, seed=3, start_ms=1_763_700_000_000, cards=50, rate=5.0
    )
    expected = expected_card_features(events)
    windows = CardWindows()
    for event in events:
        got = windows.all_features(event)
        want = {k: v for k, v in expected[event["event_id"]].items() if k != "card_id"}
        assert got.keys() == want.keys()
        for name, value in want.items():
            if isinstance(value, float):
                assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-9), name
            else:
                assert got[name] == value, (event["event_id"], name)
    # features() is all_features() narrowed to the model's inputs, in the model's order
    fresh, again = CardWindows(), CardWindows()
    for event in events[:100]:
        computed = again.all_features(event)
        assert fresh.features(event) == [float(computed[name]) for name in FEATURES]
