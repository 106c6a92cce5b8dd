"""Kafka topics rtml needs, created explicitly (the broker never auto-creates them)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def ensure_topics(
    bootstrap: str, partitions_by_topic: Mapping[str, int], *, timeout_ms: int = 30_000
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    A topic that exists with a different partition count is reported, not changed: repartitioning
    would move keys between partitions under a running job.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="rtml-admin", request_timeout_ms=timeout_ms
    )
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=count, replication_factor=1)
            for name, count in partitions_by_topic.items()
            if name not in existing
        ]
        if missing:
            # Another rtml process may create the same topic at the same moment: fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=timeout_ms)
        present = {
            meta["name"]: len(meta["partitions"])
            for meta in admin.describe_topics([t for t in partitions_by_topic if t in existing])
        }
    finally:
        admin.close()
    for name, count in present.items():
        if count != partitions_by_topic[name]:
            raise ValueError(
                f"topic {name} has {count} partitions, rtml expects {partitions_by_topic[name]}; "
                "use another topic name or recreate it"
            )
    return [topic.name for topic in missing]
