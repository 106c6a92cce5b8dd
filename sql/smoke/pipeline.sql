-- Every event is either counted or dead-lettered (sql/common/dead_letters.sql), never both and
-- never neither: both paths read the same `reason` column.
CREATE TEMPORARY VIEW classified AS
SELECT
  record_key,
  payload,
  f['key'] AS event_key,
  event_time,
  source_topic,
  source_partition,
  source_offset,
  CASE
    WHEN payload IS NULL THEN 'empty_payload'
    WHEN f IS NULL THEN 'invalid_json'
    WHEN f['key'] IS NULL THEN 'missing_key'
    WHEN event_time IS NULL THEN 'missing_or_invalid_ts'
    -- Behind the watermark: its window may have fired already; count it nowhere rather than wrongly.
    WHEN event_time <= CURRENT_WATERMARK(event_time) THEN 'late_event'
  END AS reason
-- JSON_FIELDS (sql/functions.sql) parses each record once; f['key'] is JSON_VALUE(body, '$.key').
FROM (SELECT *, JSON_FIELDS(CAST(payload AS STRING), 'key') AS f FROM raw_events);

CREATE TEMPORARY VIEW smoke_valid AS
SELECT event_key, event_time FROM classified WHERE reason IS NULL;

INSERT INTO smoke_counts
SELECT event_key, window_start, window_end, COUNT(*) AS event_count
FROM TABLE(
  TUMBLE(TABLE smoke_valid, DESCRIPTOR(event_time), INTERVAL '${window_seconds}' SECOND)
)
GROUP BY event_key, window_start, window_end;
