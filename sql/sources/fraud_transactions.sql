-- Card transactions from Kafka (rtml generate fraud writes them), checked field by field.
-- ${...} placeholders are filled by jobs/features.py from the feature set's YAML and settings.

-- Key and value as raw bytes, so a bad record can be dead-lettered unchanged.
CREATE TABLE fraud_transactions_raw (
  record_key BYTES,
  payload BYTES,
  source_topic STRING METADATA FROM 'topic' VIRTUAL,
  source_partition INT METADATA FROM 'partition' VIRTUAL,
  source_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  event_time AS TO_TIMESTAMP_LTZ(TRY_CAST(JSON_VALUE(CAST(payload AS STRING), '$.ts') AS BIGINT), 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '${out_of_orderness_seconds}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '${topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group_id}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'group-offsets',
  'properties.auto.offset.reset' = 'earliest',
  'key.format' = 'raw',
  'key.fields' = 'record_key',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'
);

-- Every record is either a valid transaction or a dead letter with its reason, never both
-- (dead letters: sql/common/dead_letters.sql reads this view).
CREATE TEMPORARY VIEW classified AS
SELECT
  record_key,
  payload,
  source_topic,
  source_partition,
  source_offset,
  event_time,
  TRY_CAST(JSON_VALUE(body, '$.ts') AS BIGINT) AS ts,
  JSON_VALUE(body, '$.event_id') AS event_id,
  JSON_VALUE(body, '$.card_id') AS card_id,
  JSON_VALUE(body, '$.merchant_id') AS merchant_id,
  TRY_CAST(JSON_VALUE(body, '$.amount') AS DOUBLE) AS amount,
  JSON_VALUE(body, '$.country') AS country,
  JSON_VALUE(body, '$.device_id') AS device_id,
  JSON_VALUE(body, '$.ip') AS ip,
  CASE
    WHEN payload IS NULL THEN 'empty_payload'
    WHEN NOT (body IS JSON OBJECT) THEN 'invalid_json'
    WHEN JSON_VALUE(body, '$.event_id') IS NULL THEN 'missing_event_id'
    WHEN JSON_VALUE(body, '$.card_id') IS NULL THEN 'missing_card_id'
    WHEN JSON_VALUE(body, '$.merchant_id') IS NULL THEN 'missing_merchant_id'
    WHEN TRY_CAST(JSON_VALUE(body, '$.amount') AS DOUBLE) IS NULL THEN 'missing_or_invalid_amount'
    WHEN event_time IS NULL THEN 'missing_or_invalid_ts'
    WHEN event_time <= CURRENT_WATERMARK(event_time) THEN 'late_event'
  END AS reason
FROM (SELECT *, CAST(payload AS STRING) AS body FROM fraud_transactions_raw);

CREATE TEMPORARY VIEW fraud_transactions AS
SELECT event_id, card_id, merchant_id, amount, country, device_id, ip, ts, event_time
FROM classified
WHERE reason IS NULL;
