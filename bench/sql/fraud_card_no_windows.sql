-- fraud_card's columns without its windows: the benchmark's stand-in (`bench.features
-- --no-windows`) for what the job costs around the window function. A stateless pass-through
-- behind the same hash exchange, each feature a cheap expression of the event of the same type,
-- so the source, the Kafka sink's JSON and the Redis writer do the same work per row as with
-- sql/features/fraud_card.sql (tests/bench/test_features.py checks the columns are the same).
SELECT
  card_id,
  event_id,
  event_time,
  ts,
  amount,
  CAST(ts % 3 AS BIGINT) AS tx_count_1m,
  CAST(ts % 5 AS BIGINT) AS tx_count_5m,
  CAST(ts % 7 AS BIGINT) AS tx_count_1h,
  CAST(ts % 11 AS BIGINT) AS tx_count_24h,
  amount * 2 AS amount_sum_5m,
  amount * 3 AS amount_sum_24h,
  amount / 2 AS amount_avg_24h,
  amount - 1 AS amount_min_5m,
  amount + 1 AS amount_max_24h,
  amount / 3 AS amount_std_24h,
  amount / 7 AS amount_vs_avg_24h,
  CAST(ts % 2 AS BIGINT) AS merchants_1m,
  CAST(ts % 4 AS BIGINT) AS merchants_5m,
  CAST(ts % 6 AS BIGINT) AS merchants_1h,
  CAST(ts % 8 AS BIGINT) AS countries_1h,
  CAST(ts % 9 AS BIGINT) AS countries_24h,
  CAST(ts % 10 AS BIGINT) AS ips_1h,
  CAST(ts % 12 AS BIGINT) AS ips_24h,
  CAST(ts % 13 AS BIGINT) AS devices_24h,
  ts % 2 = 0 AS country_new_24h,
  ts % 3 = 0 AS ip_new_24h,
  ts % 5 = 0 AS device_new_24h
FROM OWN_TASK(input => TABLE fraud_transactions PARTITION BY card_id, uid => 'no-windows')
