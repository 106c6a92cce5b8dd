-- rtml's Java functions (udfs/java, built by `make setup`), shipped with every job.

-- Per-event sliding windows over several lengths at once, cost per event independent of how many
-- events the windows hold. See udfs/java/.../SlidingWindowFeatures.java and README "Windows".
CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS SLIDING_WINDOW_FEATURES
  AS 'dev.rtml.udfs.SlidingWindowFeatures' LANGUAGE JAVA;
