"""The online-store UDF without Flink: columns go to the writer by name, a 1 per row back."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd

from rtml.online_store import FeatureSet, WriterSettings, WriteStats
from udfs.online_store import WriteOnlineFeatures


class Recorder:
    """Stands in for RedisFeatureWriter: keeps what write_columns got."""

    def __init__(self) -> None:
        self.calls: list[tuple[pd.Series, pd.Series, dict[str, pd.Series]]] = []

    def write_columns(
        self, entities: pd.Series, event_times: pd.Series, features: dict
    ) -> WriteStats:
        self.calls.append((entities, event_times, features))
        return WriteStats(rows=len(entities))


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class Context:
    def __init__(self, counter: Counter) -> None:
        self.counter_ = counter

    def get_metric_group(self) -> Context:
        return self

    def counter(self, name: str) -> Counter:
        assert name == "online_store_rows_written"
        return self.counter_


def test_eval_hands_the_columns_to_the_writer_by_feature_name() -> None:
    fs = FeatureSet("cards", entity_column="card_id", event_time_column="ts")
    udf = WriteOnlineFeatures("redis://127.0.0.1:1/0", fs, ["amount", "n"], WriterSettings())
    recorder, counter = Recorder(), Counter()
    udf.writer = recorder  # type: ignore[assignment]
    udf.open(Context(counter))  # type: ignore[arg-type]
    cards, ts = pd.Series(["a", "b", "a"]), pd.Series([1, 2, 3])
    amount, n = pd.Series([1.5, 2.5, 3.5]), pd.Series([1, 1, 2])

    out = udf.eval(cards, ts, amount, n)

    assert out.tolist() == [1, 1, 1] and out.dtype == np.int64
    ((entities, event_times, features),) = recorder.calls
    assert entities is cards and event_times is ts
    assert list(features) == ["amount", "n"]
    assert features["amount"] is amount and features["n"] is n
    assert counter.count == 3


def test_open_freezes_the_workers_heap_with_the_writer_in_it() -> None:
    fs = FeatureSet("cards", entity_column="card_id", event_time_column="ts")
    udf = WriteOnlineFeatures("redis://127.0.0.1:1/0", fs, ["amount"], WriterSettings())
    udf.open(Context(Counter()))  # type: ignore[arg-type]
    assert not any(o is udf.writer for o in gc.get_objects())  # see udfs.worker
