-- Turns the shared source `raw_events` (sql/common/raw_source.sql, run before this file) into a
-- bounded read of one offset range, for offline runs of a job's own SQL (rtml.offline): training
-- sets and backtests. The source's other options (format, watermark, read_committed) stay as the
-- live job has them, so the same SQL computes the same features.
--
-- Offsets look like 'partition:0,offset:42;partition:1,offset:7' and list every partition of the
-- topic; the end offsets are exclusive. rtml.offline resolves them against the broker and checks
-- them first (an end offset past the end of a partition would make the read wait forever).
ALTER TABLE raw_events SET (
  'scan.startup.mode' = 'specific-offsets',
  'scan.startup.specific-offsets' = '${start_offsets}',
  'scan.bounded.mode' = 'specific-offsets',
  'scan.bounded.specific-offsets' = '${end_offsets}',
  -- A consumer group of this run alone: offline runs leave the production groups (and their
  -- lag) untouched. With progress asked for, the consumer commits what it has read every
  -- second (there are no checkpoints offline), only for rtml.offline to count it; the group is
  -- deleted after the run.
  'properties.group.id' = '${group_id}',
  'properties.commit.offsets.on.checkpoint' = 'false',
  'properties.enable.auto.commit' = '${auto_commit}',
  'properties.auto.commit.interval.ms' = '1000'
);
