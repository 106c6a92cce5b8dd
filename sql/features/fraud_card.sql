-- Per-card features as of each transaction, the transaction included.
-- Windows: [1] 1 min, [2] 5 min, [3] 1 h, [4] 24 h (see README "Windows over the last N minutes").
SELECT
  card_id,
  event_id,
  event_time,
  ts,
  amount,
  counts[1] AS tx_count_1m,
  counts[2] AS tx_count_5m,
  counts[3] AS tx_count_1h,
  counts[4] AS tx_count_24h,
  sums[2] AS amount_sum_5m,
  sums[4] AS amount_sum_24h,
  avgs[4] AS amount_avg_24h,
  mins[2] AS amount_min_5m,
  maxs[4] AS amount_max_24h,
  stddevs[4] AS amount_std_24h,
  amount / avgs[4] AS amount_vs_avg_24h,
  distincts[1] AS merchants_1m,
  distincts[2] AS merchants_5m,
  distincts[3] AS merchants_1h
FROM SLIDING_WINDOW_FEATURES(
  input => TABLE fraud_transactions PARTITION BY card_id,
  value_column => 'amount',
  item_column => 'merchant_id',
  windows => '1 min, 5 min, 1 h, 24 h',
  on_time => DESCRIPTOR(event_time)
)
