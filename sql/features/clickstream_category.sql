-- Per-category hopping windows: 10 minutes long, one every minute, each written once the
-- watermark passes its end. A category with no event in a window gets no row for it: Redis keeps
-- its last window (the event time says which one).
SELECT
  category,
  window_time,
  -- epoch ms of the bounds: EXTRACT(EPOCH ...) gives whole seconds (the job runs in UTC)
  EXTRACT(EPOCH FROM window_start) * 1000 + EXTRACT(MILLISECOND FROM window_start)
    AS window_start_ms,
  EXTRACT(EPOCH FROM window_end) * 1000 + EXTRACT(MILLISECOND FROM window_end) AS window_end_ms,
  COUNT(*) AS events,
  COUNT(*) FILTER (WHERE action = 'view') AS `views`,  -- VIEWS is a reserved word
  COUNT(*) FILTER (WHERE action = 'cart') AS carts,
  -- NULL without a view in the window (a cart whose view fell in the previous window)
  CAST(COUNT(*) FILTER (WHERE action = 'cart') AS DOUBLE)
    / NULLIF(COUNT(*) FILTER (WHERE action = 'view'), 0) AS cart_rate,
  COUNT(DISTINCT user_id) AS users
FROM TABLE(
  HOP(TABLE clickstream_events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE, INTERVAL '10' MINUTE)
)
GROUP BY category, window_start, window_end, window_time
