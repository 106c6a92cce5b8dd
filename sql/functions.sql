-- rtml's Java functions (udfs/java, built by `make setup`), shipped with every job.

-- Per-event sliding windows over several lengths at once, cost per event independent of how many
-- events the windows hold. See udfs/java/.../SlidingWindowFeatures.java and README "Windows".
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS SLIDING_WINDOW_FEATURES
  AS 'dev.rtml.udfs.SlidingWindowFeatures' LANGUAGE JAVA;

-- Returns its argument and counts it in the metric rtml_dead_letters.reason.<reason>.count of the
-- operator that evaluates it: sql/common/dead_letters.sql counts every job's dead letters by reason.
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS COUNT_DEAD_LETTER
  AS 'dev.rtml.udfs.CountDeadLetter' LANGUAGE JAVA;

-- A JSON object's named top-level fields, parsed once: MAP<STRING, STRING> of each field's
-- JSON_VALUE text and its JSON type ('f:type'); NULL when the text is not one JSON object.
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS JSON_FIELDS
  AS 'dev.rtml.udfs.JsonFields' LANGUAGE JAVA;

-- Every row of its input unchanged, in a task (thread) of its own: what follows it no longer
-- shares a thread with what precedes it. See udfs/java/.../OwnTask.java.
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS OWN_TASK
  AS 'dev.rtml.udfs.OwnTask' LANGUAGE JAVA;
