-- A scoring job's predictions to Kafka (exactly-once by default): one JSON record per scored
-- event, keyed by its entity (so an entity's predictions stay in order on one partition).
-- jobs/scoring.py defines the view `scored` (the feature query's entity, event id and event time,
-- and the scoring UDF's ROW `prediction`, udfs/scoring.py) and inserts `prediction_rows` into
-- `predictions`.

CREATE TEMPORARY TABLE predictions (
  entity STRING,
  event_id STRING,
  score DOUBLE,
  decision BOOLEAN,
  model_version STRING,            -- <model>/<version> that scored it (or the rule's version)
  `path` STRING,                   -- primary, fallback_model or default
  feature_snapshot_id STRING,      -- <featureset>/v<version>/<event id>: the features row it used
  event_time TIMESTAMP_LTZ(3),
  scoring_time TIMESTAMP_LTZ(3),
  latency_ms DOUBLE,               -- from the batch's score() call to this prediction
  `error` STRING                   -- why the paths before `path` did not score it; NULL if none
) WITH (
  'connector' = 'kafka',
  'topic' = '${predictions_topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'key.format' = 'raw',
  'key.fields' = 'entity',
  'value.format' = 'json',
  'value.fields-include' = 'ALL',
  'value.json.timestamp-format.standard' = 'ISO-8601',
  -- exactly-once (the default) or at-least-once (RTML_SCORING_DELIVERY); the transactional
  -- id prefix and timeout only matter to exactly-once.
  'sink.delivery-guarantee' = '${delivery_guarantee}',
  'sink.transactional-id-prefix' = '${transactional_id_prefix}-predictions',
  -- Must stay within the broker's transaction.max.timeout.ms (1 h on rtml's broker).
  'properties.transaction.timeout.ms' = '${transaction_timeout_ms}'
);

CREATE TEMPORARY VIEW prediction_rows AS
SELECT
  s.entity,
  s.event_id,
  s.prediction.score,
  s.prediction.decision,
  s.prediction.model_version,
  s.prediction.`path`,
  CONCAT('${snapshot_prefix}', s.event_id) AS feature_snapshot_id,
  s.event_time,
  TO_TIMESTAMP_LTZ(s.prediction.scored_ms, 3) AS scoring_time,
  s.prediction.latency_ms,
  s.prediction.`error`
FROM scored AS s;
