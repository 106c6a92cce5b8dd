"""Model training on features computed offline by the feature sets' own SQL (`rtml train`).

`rtml.training.models` holds the pure parts (datasets, splits, fitting, thresholds, metrics,
metadata), tested on small frames; `rtml.training.fraud` wires them to Kafka, Flink and the model
server for `rtml train fraud`.
"""
