-- Card transactions from Kafka (rtml generate fraud writes them), checked field by field.
-- The records come from raw_events (sql/common/raw_source.sql); placeholders are filled by
-- jobs/features.py from the feature set's YAML and settings.

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
FROM (SELECT *, CAST(payload AS STRING) AS body FROM raw_events);

CREATE TEMPORARY VIEW fraud_transactions AS
SELECT event_id, card_id, merchant_id, amount, country, device_id, ip, ts, event_time
FROM classified
WHERE reason IS NULL;
