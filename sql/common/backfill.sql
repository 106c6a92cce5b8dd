-- Turns the shared source `raw_events` (sql/common/raw_source.sql, run before this file) into a
-- re-read of the source topic from a point in time, for a live feature job that starts with empty
-- windows (`rtml submit features NAME --backfill`): it reads the records of the last
-- `longest window` again so that its windows are full when it catches up. Its consumer group and
-- everything else stay as the live job has them.
ALTER TABLE raw_events SET (
  'scan.startup.mode' = 'timestamp',
  'scan.startup.timestamp-millis' = '${start_ms}'
);
