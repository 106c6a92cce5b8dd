-- Per-merchant features as of each transaction, the transaction included.
-- Windows: [1] 1 min, [2] 5 min, [3] 1 h. Item column: [1] card_id.
--
-- Transactions are keyed by card in Kafka, so one merchant's transactions come from every
-- partition, interleaved in arrival order rather than event time, and SLIDING_WINDOW_FEATURES
-- aggregates in arrival order. The OVER ... ROWS below puts each merchant's transactions in
-- event-time order first (per merchant, in parallel): it holds them until the watermark passes
-- them, so these features appear about the source's out_of_orderness after the transaction (and
-- only once every partition has moved past it), and are exact as of each transaction.
-- (Flink 2.2's PTF call has no ORDER BY yet; a subquery cannot be its table argument, a CTE can.)
WITH in_event_time_order AS (
  SELECT
    event_id,
    card_id,
    merchant_id,
    amount,
    ts,
    event_time,
    -- The count is not used: the OVER is here for its ordering. Its output passes through the
    -- table function, so the planner keeps it.
    COUNT(*) OVER (
      PARTITION BY merchant_id ORDER BY event_time
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS merchant_sequence
  FROM fraud_transactions
)
SELECT
  merchant_id,
  event_id,
  event_time,
  ts,
  counts[1] AS tx_count_1m,
  counts[2] AS tx_count_5m,
  counts[3] AS tx_count_1h,
  sums[1] AS amount_sum_1m,
  sums[2] AS amount_sum_5m,
  sums[3] AS amount_sum_1h,
  amount / avgs[3] AS amount_vs_avg_1h,
  distincts[1][2] AS cards_5m,
  distincts[1][3] AS cards_1h
FROM SLIDING_WINDOW_FEATURES(
  input => TABLE in_event_time_order PARTITION BY merchant_id,
  value_column => 'amount',
  item_columns => 'card_id',
  windows => '1 min, 5 min, 1 h',
  on_time => DESCRIPTOR(event_time)
)
