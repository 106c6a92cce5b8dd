-- Smoke job tables. ${...} placeholders are filled by rtml from SmokeJobSettings (RTML_SMOKE_*).
-- Events come from raw_events (sql/common/raw_source.sql): JSON like {"key": "k1", "ts": <ms>}.

CREATE TABLE smoke_counts (
  event_key STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  event_count BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = '${output_topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'key.format' = 'raw',
  'key.fields' = 'event_key',
  'value.format' = 'json',
  'value.json.timestamp-format.standard' = 'ISO-8601',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '${transactional_id_prefix}-counts',
  -- Must stay within the broker's transaction.max.timeout.ms (1 h on rtml's broker).
  'properties.transaction.timeout.ms' = '${transaction_timeout_ms}'
);
