-- Per-item tumbling one-minute windows, each written once the watermark passes its end. An item
-- with no event in a minute gets no row for it: Redis keeps its last active minute (the event
-- time says which one).
SELECT
  item_id,
  window_time,
  EXTRACT(EPOCH FROM window_start) * 1000 + EXTRACT(MILLISECOND FROM window_start)
    AS window_start_ms,
  EXTRACT(EPOCH FROM window_end) * 1000 + EXTRACT(MILLISECOND FROM window_end) AS window_end_ms,
  COUNT(*) FILTER (WHERE action = 'view') AS `views`,  -- VIEWS is a reserved word
  COUNT(*) FILTER (WHERE action = 'cart') AS carts,
  COUNT(*) FILTER (WHERE action = 'purchase') AS purchases,
  COUNT(DISTINCT user_id) AS users
FROM TABLE(TUMBLE(TABLE clickstream_events, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
GROUP BY item_id, window_start, window_end, window_time
