-- Shop clickstream events from Kafka (rtml generate clickstream writes them), checked field by
-- field. The records come from raw_events (sql/common/raw_source.sql); placeholders are filled by
-- jobs/features.py from the feature set's YAML and settings.

-- Every record is either a valid event or a dead letter with its reason, never both (dead
-- letters: sql/common/dead_letters.sql reads this view). Ids must be non-empty JSON strings: a
-- number, boolean, object or array where a string belongs is a producer bug, not an id to guess
-- at. JSON_FIELDS (sql/functions.sql) parses each record once: f['x'] is JSON_VALUE(body, '$.x')
-- and f['x:type'] the field's JSON type ('string', 'number', ..., 'null'; NULL when absent).
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
  f['user_id'] AS user_id,
  f['item_id'] AS item_id,
  f['category'] AS category,
  f['action'] AS action,
  CASE
    WHEN payload IS NULL THEN 'empty_payload'
    WHEN f IS NULL THEN 'invalid_json'
    WHEN f['event_id'] IS NULL THEN 'missing_event_id'
    WHEN COALESCE(f['user_id:type'], 'null') = 'null' THEN 'missing_user_id'
    WHEN f['user_id:type'] <> 'string' OR f['user_id'] = '' THEN 'invalid_user_id'
    WHEN COALESCE(f['item_id:type'], 'null') = 'null' THEN 'missing_item_id'
    WHEN f['item_id:type'] <> 'string' OR f['item_id'] = '' THEN 'invalid_item_id'
    WHEN COALESCE(f['category:type'], 'null') = 'null' THEN 'missing_category'
    WHEN f['category:type'] <> 'string' OR f['category'] = '' THEN 'invalid_category'
    WHEN COALESCE(f['action:type'], 'null') = 'null' THEN 'missing_action'
    -- the funnel's three steps; anything else (another word, a number) is not an action we know
    WHEN f['action:type'] <> 'string' OR f['action'] NOT IN ('view', 'cart', 'purchase')
      THEN 'unknown_action'
    WHEN event_time IS NULL THEN 'missing_or_invalid_ts'
    WHEN event_time <= CURRENT_WATERMARK(event_time) THEN 'late_event'
  END AS reason
FROM (
  SELECT *, JSON_FIELDS(CAST(payload AS STRING),
    'ts, event_id, user_id, item_id, category, action') AS f
  FROM raw_events
);

-- The generator's ground truth (`is_bot`, `session_hint`) is deliberately not passed on: features
-- must find bots and sessions from behaviour, not from labels.
CREATE TEMPORARY VIEW clickstream_events AS
SELECT event_id, user_id, item_id, category, action, ts, event_time
FROM classified
WHERE reason IS NULL;
