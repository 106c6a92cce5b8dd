-- Per-user sessions: a session ends after 30 minutes without an event from the user (the
-- generator's definition, and the usual one in web analytics). Human sessions have events at most
-- 10 minutes apart and more than 30 minutes between sessions, so any gap in (10, 30] minutes finds
-- the generator's sessions exactly; 30 keeps a user who reads a long page in one session, at the
-- price that a session's features are written 30 minutes after its last event.
-- A row is written once per session, when the watermark passes its last event + 30 minutes.
SELECT
  user_id,
  window_time,
  MIN(ts) AS session_start_ms,
  MAX(ts) AS session_last_ms,
  MAX(ts) - MIN(ts) AS duration_ms,
  COUNT(*) AS events,
  COUNT(*) FILTER (WHERE action = 'view') AS `views`,  -- VIEWS is a reserved word
  COUNT(*) FILTER (WHERE action = 'cart') AS carts,
  COUNT(*) FILTER (WHERE action = 'purchase') AS purchases,
  -- NULL when the session has no view (the ratio is undefined, not 0)
  CAST(COUNT(*) FILTER (WHERE action = 'cart') AS DOUBLE)
    / NULLIF(COUNT(*) FILTER (WHERE action = 'view'), 0) AS view_to_cart_ratio,
  COUNT(DISTINCT item_id) AS items,
  COUNT(DISTINCT category) AS categories
FROM TABLE(
  SESSION(TABLE clickstream_events PARTITION BY user_id, DESCRIPTOR(event_time), INTERVAL '30' MINUTE)
)
GROUP BY user_id, window_start, window_end, window_time
