-- Per-user features as of each event, the event included (see README "Windows over the last N
-- minutes"). Windows: [1] 5 min, [2] 30 min. Item columns: [1] category, [2] item_id, so
-- distincts[1][w] counts the categories in window w and item_counts[1][w] the events of this
-- event's category. The value column `cart` is 1 for a cart and 0 otherwise, so its sums count carts.
WITH events AS (
  SELECT *, CASE WHEN action = 'cart' THEN 1.0 ELSE 0.0 END AS cart FROM clickstream_events
)
SELECT
  user_id,
  event_id,
  event_time,
  ts,
  action,
  category,
  item_id,
  counts[1] AS events_5m,
  counts[2] AS events_30m,
  CAST(sums[2] AS BIGINT) AS carts_30m,
  distincts[1][2] AS categories_30m,
  distincts[2][2] AS items_30m,
  item_counts[1][2] AS category_events_30m,
  -- the share of the user's last 30 minutes spent in this event's category (1.0: nothing else)
  CAST(item_counts[1][2] AS DOUBLE) / counts[2] AS category_affinity_30m
FROM SLIDING_WINDOW_FEATURES(
  input => TABLE events PARTITION BY user_id,
  value_column => 'cart',
  item_columns => 'category, item_id',
  windows => '5 min, 30 min',
  on_time => DESCRIPTOR(event_time)
)
