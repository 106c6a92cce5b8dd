"""The versions rtml pins, in one place.

`pom.xml` and `pyproject.toml` repeat some of them for their own tools; a test keeps them in step.
"""

FLINK = "2.2.1"
FLINK_KAFKA_CONNECTOR = "5.0.0-2.2"
KAFKA = "4.2.1"
FLINK_KAFKA_CONNECTOR_JAR = f"flink-sql-connector-kafka-{FLINK_KAFKA_CONNECTOR}.jar"
UDFS_JAR = "rtml-udfs.jar"  # built from udfs/java by `make setup`

# SLIDING_WINDOW_FEATURES' state layout (STATE_LAYOUT in udfs/java/.../SlidingWindowFeatures.java):
# part of a feature job's state manifest, so a savepoint of an older layout is refused up front.
SLIDING_WINDOW_STATE_LAYOUT = 4
