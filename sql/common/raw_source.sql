-- The raw records of a job's source topic, the same for every job: key and value as bytes (so a
-- bad record can be dead-lettered unchanged), where each came from, and its event time from the
-- JSON field `ts` (epoch ms; NULL when missing or not a number, which the job's `classified` view
-- turns into a dead letter).
CREATE TABLE raw_events (
  record_key BYTES,
  payload BYTES,
  source_topic STRING METADATA FROM 'topic' VIRTUAL,
  source_partition INT METADATA FROM 'partition' VIRTUAL,
  source_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  event_time AS TO_TIMESTAMP_LTZ(TRY_CAST(JSON_FIELDS(CAST(payload AS STRING), 'ts')['ts'] AS BIGINT), 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '${out_of_orderness_seconds}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '${topic}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group_id}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'group-offsets',
  'properties.auto.offset.reset' = 'earliest',
  -- 0 s waits for every partition. With idleness, a quiet partition stops holding back the
  -- watermark, but when it resumes after a pause its first events may already be late.
  'scan.watermark.idle-timeout' = '${idle_timeout}',
  'key.format' = 'raw',
  'key.fields' = 'record_key',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'
);
