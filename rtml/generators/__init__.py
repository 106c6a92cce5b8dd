"""Seeded synthetic event generators of the reference use cases, by name (`rtml generate NAME`).

Every generator is pure and deterministic for a seed: `generate(count, *, seed, start_ms, rate)`
returns a list of JSON-ready dicts in event-time order, `iter_events` (same arguments) streams them
for 1M+ events, `key_of(event)` is the Kafka key. `rate` is events per second of event time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtml.generators import clickstream, fraud

if TYPE_CHECKING:
    from rtml.generate import Record

Event = dict[str, object]


@dataclass(frozen=True)
class Generator:
    """One named generator: its functions and the topics its events (and labels) go to."""

    name: str
    generate: Callable[..., list[Event]]
    iter_events: Callable[..., Iterator[Event]]
    key_of: Callable[[Mapping[str, object]], str]
    topic_default: str
    labels: Callable[..., list[Event]] | None = None  # later label events, from the events
    labels_topic_default: str | None = None
    label_key_of: Callable[[Mapping[str, object]], str] | None = None


GENERATORS: dict[str, Generator] = {
    "fraud": Generator(
        name="fraud",
        generate=fraud.generate,
        iter_events=fraud.iter_events,
        key_of=fraud.key_of,
        topic_default=fraud.TOPIC,
        labels=fraud.labels,
        labels_topic_default=fraud.LABELS_TOPIC,
        label_key_of=fraud.key_of,
    ),
    "clickstream": Generator(
        name="clickstream",
        generate=clickstream.generate,
        iter_events=clickstream.iter_events,
        key_of=clickstream.key_of,
        topic_default=clickstream.TOPIC,
    ),
}


def as_records(
    events: Iterable[Mapping[str, object]], key_of: Callable[[Mapping[str, object]], str]
) -> Iterator[Record]:
    """JSON records keyed by `key_of(event)`, for `rtml.generate.produce`."""
    from rtml.generate import Record  # here, so rtml.generate may import this package

    for event in events:
        yield Record(key_of(event).encode(), json.dumps(event).encode())
