-- Per-card features as of each transaction, the transaction included.
-- Windows: [1] 1 min, [2] 5 min, [3] 1 h, [4] 24 h (see README "Windows over the last N minutes").
-- Item columns: [1] merchant_id, [2] country, [3] ip, [4] device_id; distincts[i][w] counts the
-- distinct values of item i in window w, item_counts[i][w] the card's transactions in window w
-- with this transaction's value of item i (this one included: 1 means "first time in window w").
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
  distincts[1][1] AS merchants_1m,
  distincts[1][2] AS merchants_5m,
  distincts[1][3] AS merchants_1h,
  distincts[2][3] AS countries_1h,
  distincts[2][4] AS countries_24h,
  distincts[3][3] AS ips_1h,
  distincts[3][4] AS ips_24h,
  distincts[4][4] AS devices_24h,
  -- Account takeover signals: a country, IP or device the card has not used in the last 24 h.
  -- NULL when the transaction has no such value (unknown, not "new").
  item_counts[2][4] = 1 AS country_new_24h,
  item_counts[3][4] = 1 AS ip_new_24h,
  item_counts[4][4] = 1 AS device_new_24h
FROM SLIDING_WINDOW_FEATURES(
  input => TABLE fraud_transactions PARTITION BY card_id,
  value_column => 'amount',
  item_columns => 'merchant_id, country, ip, device_id',
  windows => '1 min, 5 min, 1 h, 24 h',
  on_time => DESCRIPTOR(event_time)
)
