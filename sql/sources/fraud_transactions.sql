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
  TRY_CAST(f['ts'] AS BIGINT) AS ts,
  f['event_id'] AS event_id,
  f['card_id'] AS card_id,
  f['merchant_id'] AS merchant_id,
  TRY_CAST(f['amount'] AS DOUBLE) AS amount,
  f['country'] AS country,
  f['device_id'] AS device_id,
  f['ip'] AS ip,
  CASE
    WHEN payload IS NULL THEN 'empty_payload'
    WHEN f IS NULL THEN 'invalid_json'
    WHEN f['event_id'] IS NULL THEN 'missing_event_id'
    WHEN f['card_id'] IS NULL THEN 'missing_card_id'
    WHEN f['merchant_id'] IS NULL THEN 'missing_merchant_id'
    WHEN TRY_CAST(f['amount'] AS DOUBLE) IS NULL THEN 'missing_or_invalid_amount'
    WHEN event_time IS NULL THEN 'missing_or_invalid_ts'
    WHEN event_time <= CURRENT_WATERMARK(event_time) THEN 'late_event'
  END AS reason
-- JSON_FIELDS (sql/functions.sql) parses each record once; f['x'] is JSON_VALUE(body, '$.x').
FROM (
  SELECT *, JSON_FIELDS(CAST(payload AS STRING),
    'ts, event_id, card_id, merchant_id, amount, country, device_id, ip') AS f
  FROM raw_events
);

CREATE TEMPORARY VIEW fraud_transactions AS
SELECT event_id, card_id, merchant_id, amount, country, device_id, ip, ts, event_time
FROM classified
WHERE reason IS NULL;
