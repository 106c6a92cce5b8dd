"""A vectorized (pandas) UDF that writes feature rows to the Redis online store.

Flink hands it Arrow batches; it writes each batch through `RedisFeatureWriter.write_batch`, which
returns only when Redis has acknowledged every row. Flink finishes the Python bundle before a
checkpoint barrier passes, so a completed checkpoint means every row before it is in Redis: after a
crash the replay re-writes them, and the newest-wins script makes that a no-op.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, UserDefinedScalarFunctionWrapper, udf

from rtml.online_store import FeatureSet, RedisFeatureWriter, WriterSettings
from udfs.worker import freeze_startup_heap


class WriteOnlineFeatures(ScalarFunction):
    """write(entity, event_ms, feature_1, ..., feature_n) -> 1 per row, once it is in Redis."""

    def __init__(
        self,
        redis_url: str,
        featureset: FeatureSet,
        feature_names: list[str],
        settings: WriterSettings,
    ) -> None:
        self.writer = RedisFeatureWriter(redis_url, featureset, settings)
        self.featureset = featureset
        self.feature_names = list(feature_names)

    def open(self, function_context: FunctionContext) -> None:
        self.written = function_context.get_metric_group().counter("online_store_rows_written")
        freeze_startup_heap()

    def eval(self, entity: pd.Series, event_ms: pd.Series, *features: pd.Series) -> pd.Series:
        # Columns go to the writer as they are: it encodes them vectorized, newest row per entity.
        stats = self.writer.write_columns(
            entity, event_ms, dict(zip(self.feature_names, features, strict=True))
        )
        self.written.inc(stats.rows)
        return pd.Series(np.ones(stats.rows, dtype=np.int64))

    def close(self) -> None:
        self.writer.close()


def write_online_features(
    redis_url: str,
    featureset: FeatureSet,
    feature_names: list[str],
    settings: WriterSettings | None = None,
) -> UserDefinedScalarFunctionWrapper:
    """The UDF, ready to register; the writer connects lazily on the TaskManager."""
    return udf(
        WriteOnlineFeatures(redis_url, featureset, feature_names, settings or WriterSettings()),
        result_type=DataTypes.BIGINT(),
        func_type="pandas",
    )
