-- Shop clickstream events from Kafka (rtml generate clickstream writes them), checked field by
-- field. The records come from raw_events (sql/common/raw_source.sql); placeholders are filled by
-- jobs/features.py from the feature set's YAML and settings.

-- Every record is either a valid event or a dead letter with its reason, never both (dead
-- letters: sql/common/dead_letters.sql reads this view). Ids must be non-empty JSON strings: a
-- number, boolean, object or array where a string belongs is a producer bug, not an id to guess
-- at. `*_json` wraps a field's JSON value in an array (`["u-1"]`, `[42]`, `[{...}]`; NULL when
-- the field is absent or null), which is how its JSON type can be seen: a string starts `["`.
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
  JSON_VALUE(body, '$.user_id') AS user_id,
  JSON_VALUE(body, '$.item_id') AS item_id,
  JSON_VALUE(body, '$.category') AS category,
  JSON_VALUE(body, '$.action') AS action,
  CASE
    WHEN payload IS NULL THEN 'empty_payload'
    WHEN NOT (body IS JSON OBJECT) THEN 'invalid_json'
    WHEN JSON_VALUE(body, '$.event_id') IS NULL THEN 'missing_event_id'
    WHEN user_json IS NULL THEN 'missing_user_id'
    WHEN user_json NOT LIKE '["%' OR JSON_VALUE(body, '$.user_id') = '' THEN 'invalid_user_id'
    WHEN item_json IS NULL THEN 'missing_item_id'
    WHEN item_json NOT LIKE '["%' OR JSON_VALUE(body, '$.item_id') = '' THEN 'invalid_item_id'
    WHEN category_json IS NULL THEN 'missing_category'
    WHEN category_json NOT LIKE '["%' OR JSON_VALUE(body, '$.category') = ''
      THEN 'invalid_category'
    WHEN action_json IS NULL THEN 'missing_action'
    -- the funnel's three steps; anything else (another word, a number) is not an action we know
    WHEN action_json NOT IN ('["view"]', '["cart"]', '["purchase"]') THEN 'unknown_action'
    WHEN event_time IS NULL THEN 'missing_or_invalid_ts'
    WHEN event_time <= CURRENT_WATERMARK(event_time) THEN 'late_event'
  END AS reason
FROM (
  SELECT
    *,
    JSON_QUERY(body, '$.user_id' WITH CONDITIONAL ARRAY WRAPPER) AS user_json,
    JSON_QUERY(body, '$.item_id' WITH CONDITIONAL ARRAY WRAPPER) AS item_json,
    JSON_QUERY(body, '$.category' WITH CONDITIONAL ARRAY WRAPPER) AS category_json,
    JSON_QUERY(body, '$.action' WITH CONDITIONAL ARRAY WRAPPER) AS action_json
  FROM (SELECT *, CAST(payload AS STRING) AS body FROM raw_events)
);

-- The generator's ground truth (`is_bot`, `session_hint`) is deliberately not passed on: features
-- must find bots and sessions from behaviour, not from labels.
CREATE TEMPORARY VIEW clickstream_events AS
SELECT event_id, user_id, item_id, category, action, ts, event_time
FROM classified
WHERE reason IS NULL;
