-- Smoke job tables. ${...} placeholders are filled by rtml from SmokeJobSettings (RTML_SMOKE_*).

-- Events arrive as JSON, e.g. {"key": "k1", "ts": 1763700000000}; ts is epoch milliseconds.
-- Key and value are read as raw bytes so a bad record can be dead-lettered unchanged.
CREATE TABLE smoke_events (
  record_key BYTES,
  payload BYTES,
  source_topic STRING METADATA FROM 'topic' VIRTUAL,
  source_partition INT METADATA FROM 'partition' VIRTUAL,
  source_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  event_time AS TO_TIMESTAMP_LTZ(TRY_CAST(JSON_VALUE(CAST(payload AS STRING), '$.ts') AS BIGINT), 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '${out_of_orderness_seconds}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '${input_topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group_id}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'group-offsets',
  'properties.auto.offset.reset' = 'earliest',
  -- 0 s (the default) waits for every partition. With idleness, a quiet partition stops holding
  -- back the watermark, but when it resumes after a pause its first events may already be late.
  'scan.watermark.idle-timeout' = '${idle_timeout}',
  'key.format' = 'raw',
  'key.fields' = 'record_key',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'
);

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
