-- Dead letters, the same for every job: each job's source SQL defines a view `classified` with the
-- original record_key and payload bytes, their source_topic/partition/offset and a `reason` that is
-- NULL for a valid record. Every other record goes to the dead-letter topic, exactly-once, and is
-- counted in the Flink metric rtml_dead_letters.reason.<reason>.count (COUNT_DEAD_LETTER,
-- sql/functions.sql), so dashboards and alerts see each reason without reading the topic.

-- The original bytes are the record; why and where from go in headers (the convention of Kafka
-- Connect's dead-letter queues), readable by any consumer.
CREATE TABLE dead_letters (
  record_key BYTES,
  payload BYTES,
  headers MAP<STRING, BYTES> METADATA
) WITH (
  'connector' = 'kafka',
  'topic' = '${dead_letter_topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'key.format' = 'raw',
  'key.fields' = 'record_key',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '${transactional_id_prefix}-dead-letters',
  -- Must stay within the broker's transaction.max.timeout.ms (1 h on rtml's broker).
  'properties.transaction.timeout.ms' = '${transaction_timeout_ms}'
);

INSERT INTO dead_letters
SELECT
  record_key,
  payload,
  MAP[
    'rtml.reason', CAST(COUNT_DEAD_LETTER(reason) AS BYTES),
    'rtml.source.topic', CAST(source_topic AS BYTES),
    'rtml.source.partition', CAST(CAST(source_partition AS STRING) AS BYTES),
    'rtml.source.offset', CAST(CAST(source_offset AS STRING) AS BYTES)
  ]
FROM classified
WHERE reason IS NOT NULL;
