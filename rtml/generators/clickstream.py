"""Seeded shop clickstream sessions with a view -> cart -> purchase funnel and labelled bots (pure).

Users have 1..N sessions. Sessions arrive at random (exponential inter-arrival times) and go to a
user drawn from a Zipf-like activity distribution; a user is never in two sessions at once, and
their next session starts more than `session_gap_ms` after the previous one's last event (a drawn
user who is still active or inside that gap is redrawn a few times, else the session waits until
the user is free). Within a human session events are seconds to minutes apart (always less than
`session_gap_ms`): views of items mostly from the user's 1-3 favourite categories, an item viewed
is sometimes carted right after, and a session with carted items sometimes ends with a checkout
(one purchase event per item bought) -- so views >> carts >> purchases.

Bot sessions (`is_bot` True on every event; `bot_fraction` of sessions) are scrapers: 30-150 views
of random items 0.1-0.9 s apart, no carts, no purchases, each under a fresh user id (cookies are
not kept). `session_hint` is the ground-truth session number of the user (0, 1, ...), for tests:
a job must find sessions from the inactivity gaps itself.

Memory: `iter_events` holds one small record per user and the sessions in progress (each
precomputed when it starts), nothing per emitted event, so 1M+ events can be streamed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

TOPIC = "rtml.clickstream.events"
DEFAULT_RATE = 10.0  # events per second of event time when `rate` is None
DEFAULT_SESSION_GAP_MS = 30 * 60 * 1000
DEFAULT_BOT_FRACTION = 0.01  # share of sessions (a bot session has ~16x the events of a human one)
ACTIONS = ("view", "cart", "purchase")

# category -> share of the catalogue
CATEGORIES: Mapping[str, float] = {
    "electronics": 0.12, "books": 0.12, "fashion": 0.14, "home": 0.10, "sports": 0.08,
    "beauty": 0.08, "toys": 0.07, "grocery": 0.09, "garden": 0.05, "music": 0.05,
    "games": 0.06, "auto": 0.04,
}  # fmt: skip

VIEW_STOP_PROBABILITY = 0.2  # after each view: 1 + geometric views, mean 5
MAX_VIEWS = 40
FAVOURITE_PROBABILITY = 0.8  # a view is in one of the user's favourite categories
VIEW_GAP_S = (20.0, 0.9)  # log-normal (median, sigma) between events of a session
MAX_EVENT_GAP_MS = 600_000  # within a session, also always < session_gap_ms
CART_PROBABILITY = 0.1  # a viewed item is carted
CART_GAP_S = (3.0, 60.0)
CHECKOUT_PROBABILITY = 0.45  # a session with carted items ends with a purchase
CHECKOUT_GAP_S = (30.0, 180.0)
ITEM_BOUGHT_PROBABILITY = 0.8  # each carted item (at least one) is bought at checkout
BOT_VIEWS = (30, 150)
BOT_GAP_MS = (100, 900)
USER_REDRAWS = 5
# mean events of a session, for the session arrival rate that makes `rate` events per second
HUMAN_SESSION_EVENTS = 5.7
BOT_SESSION_EVENTS = (BOT_VIEWS[0] + BOT_VIEWS[1]) / 2


def key_of(event: Mapping[str, object]) -> str:
    """The Kafka key of an event: its user (one user's events stay in order)."""
    return str(event["user_id"])


def generate(count: int, **options: Any) -> list[dict[str, object]]:
    """`count` clickstream events as a list; `iter_events` names and explains the options."""
    return list(iter_events(count, **options))


def iter_events(
    count: int,
    *,
    seed: int = 0,
    start_ms: int,
    rate: float | None = None,
    session_gap_ms: int = DEFAULT_SESSION_GAP_MS,
    bot_fraction: float = DEFAULT_BOT_FRACTION,
    jitter_ms: int = 0,
    users: int | None = None,
    items: int = 2000,
) -> Iterator[dict[str, object]]:
    """Yield `count` clickstream events in event-time order, deterministic for `seed`.

    `rate`: mean events per second of event time (default `DEFAULT_RATE`; approximate: sessions
    arrive at random). `session_gap_ms`: the inactivity gap that separates a user's sessions
    (gaps within a session are shorter, gaps between sessions longer). `bot_fraction`: share of
    sessions that are bots. `jitter_ms` > 0 moves each `ts` back by up to that much (never before
    `start_ms`), from its own random stream. `users` (human users) defaults to enough users for
    the stream's duration that sessions rarely wait for a busy user; `items` sizes the catalogue.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if session_gap_ms < 2000:
        raise ValueError(f"session_gap_ms must be >= 2000, got {session_gap_ms}")
    if not 0.0 <= bot_fraction <= 1.0:
        raise ValueError(f"bot_fraction must be within [0, 1], got {bot_fraction}")
    if jitter_ms < 0:
        raise ValueError(f"jitter_ms must be >= 0, got {jitter_ms}")
    if items < len(CATEGORIES):
        raise ValueError(f"items must be >= {len(CATEGORIES)}, got {items}")
    rate = rate or DEFAULT_RATE
    per_session = (1 - bot_fraction) * HUMAN_SESSION_EVENTS + bot_fraction * BOT_SESSION_EVENTS
    sessions_per_ms = rate / per_session / 1000.0
    if users is None:
        span_ms = max(count * 1000.0 / rate, 1.0)
        cycle_ms = 2.0 * session_gap_ms + 150_000  # a session, the gap and the extra pause after
        sessions = count / per_session
        # about two sessions per user, and room for the busiest users' sessions in the span
        users = max(10, math.ceil(sessions / 2), math.ceil(3 * sessions * cycle_ms / span_ms))
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    world = _World(seed, users, items, session_gap_ms, jitter_ms, start_ms)
    return world.stream(count, start_ms, sessions_per_ms, bot_fraction)


def _zipf_cum_weights(n: int, exponent: float, offset: float) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights 1 / (rank + offset) ** exponent (rank 0 likeliest)."""
    return list(itertools.accumulate(1.0 / (rank + offset) ** exponent for rank in range(n)))


@dataclass
class _Session:
    user_id: str
    hint: int
    is_bot: bool
    start: float
    steps: list[tuple[float, str, int]]  # (offset ms from start, action, item)


class _World:
    """Users, the catalogue and one seeded random stream; emits events in event-time order."""

    def __init__(
        self, seed: int, n_users: int, n_items: int, session_gap_ms: int, jitter_ms: int,
        start_ms: int,
    ) -> None:  # fmt: skip
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.jitter = random.Random(f"rtml.clickstream.jitter-{seed}") if jitter_ms else None
        self.jitter_ms = jitter_ms
        self.start_ms = start_ms
        self.session_gap_ms = session_gap_ms
        self.max_gap_ms = min(MAX_EVENT_GAP_MS, session_gap_ms - 1000)
        ids: set[str] = set()
        while len(ids) < n_users:
            ids.add(self.user_id())
        self.user_ids = sorted(ids)
        rng.shuffle(self.user_ids)  # index 0 is the busiest
        self.user_cum = _zipf_cum_weights(n_users, 0.75, 10.0)
        self.next_free = [float("-inf")] * n_users  # earliest start of the user's next session
        self.sessions = [0] * n_users
        self.favourites: dict[int, list[int]] = {}
        self.categories = list(CATEGORIES)
        n_categories = len(self.categories)
        self.item_ids = [f"i-{number:06d}" for number in rng.sample(range(10**6), n_items)]
        # every category has an item; the rest of the catalogue follows the category shares
        self.item_category = list(range(n_categories)) + rng.choices(
            range(n_categories), list(CATEGORIES.values()), k=n_items - n_categories
        )
        self.category_items: list[list[int]] = [[] for _ in range(n_categories)]
        for item, category in enumerate(self.item_category):
            self.category_items[category].append(item)
        self.category_cum = [_zipf_cum_weights(len(c), 1.0, 3.0) for c in self.category_items]

    def user_id(self) -> str:
        return f"u-{self.rng.getrandbits(40):010x}"

    def gap_ms(self, low_s: float, high_s: float) -> float:
        return min(self.rng.uniform(low_s, high_s) * 1000.0, self.max_gap_ms)

    def view_item(self, user: int) -> int:
        rng = self.rng
        favourites = self.favourites.get(user)
        if favourites is None:
            favourites = self.favourites[user] = rng.sample(
                range(len(self.categories)), rng.randint(1, 3)
            )
        if rng.random() < FAVOURITE_PROBABILITY:
            category = rng.choice(favourites)
        else:
            category = rng.randrange(len(self.categories))
        items = self.category_items[category]
        return items[rng.choices(range(len(items)), cum_weights=self.category_cum[category])[0]]

    def human_steps(self, user: int) -> list[tuple[float, str, int]]:
        rng = self.rng
        median_s, sigma = VIEW_GAP_S
        mu = math.log(median_s * 1000.0)
        steps: list[tuple[float, str, int]] = []
        carted: list[int] = []
        t = 0.0
        views = 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - VIEW_STOP_PROBABILITY))
        for v in range(min(views, MAX_VIEWS)):
            if v:
                t += min(max(rng.lognormvariate(mu, sigma), 1000.0), self.max_gap_ms)
            item = self.view_item(user)
            steps.append((t, "view", item))
            if rng.random() < CART_PROBABILITY and item not in carted:
                t += self.gap_ms(*CART_GAP_S)
                steps.append((t, "cart", item))
                carted.append(item)
        if carted and rng.random() < CHECKOUT_PROBABILITY:
            t += self.gap_ms(*CHECKOUT_GAP_S)
            for i, item in enumerate(carted):
                if i == 0 or rng.random() < ITEM_BOUGHT_PROBABILITY:
                    steps.append((t, "purchase", item))
                    t += rng.uniform(100.0, 500.0)
        return steps

    def bot_steps(self) -> list[tuple[float, str, int]]:
        rng = self.rng
        n_items = len(self.item_ids)
        t = 0.0
        steps = []
        for v in range(rng.randint(*BOT_VIEWS)):
            if v:
                t += rng.uniform(*BOT_GAP_MS)
            steps.append((t, "view", rng.randrange(n_items)))
        return steps

    def new_session(self, at: float, bot_fraction: float) -> _Session:
        rng = self.rng
        if rng.random() < bot_fraction:
            return _Session(self.user_id(), 0, True, at, self.bot_steps())
        users = range(len(self.user_ids))
        for _ in range(USER_REDRAWS):
            user = rng.choices(users, cum_weights=self.user_cum)[0]
            if self.next_free[user] <= at:
                break
        start = max(at, self.next_free[user])  # the last drawn user, maybe later
        steps = self.human_steps(user)
        pause = 1000.0 + rng.expovariate(1.0 / self.session_gap_ms)
        self.next_free[user] = start + steps[-1][0] + self.session_gap_ms + pause
        hint = self.sessions[user]
        self.sessions[user] += 1
        return _Session(self.user_ids[user], hint, False, start, steps)

    def stream(
        self, count: int, start_ms: int, sessions_per_ms: float, bot_fraction: float
    ) -> Iterator[dict[str, object]]:
        rng = self.rng
        pending: list[tuple[float, int, int, _Session]] = []
        order = itertools.count()
        next_start = float(start_ms)
        emitted = 0
        while emitted < count:
            if not pending or next_start <= pending[0][0]:
                session = self.new_session(next_start, bot_fraction)
                heapq.heappush(pending, (session.start, next(order), 0, session))
                next_start += rng.expovariate(sessions_per_ms)
                continue
            at, _, k, session = heapq.heappop(pending)
            yield self.event(emitted, int(at), session, k)
            emitted += 1
            if k + 1 < len(session.steps):
                step_at = session.start + session.steps[k + 1][0]
                heapq.heappush(pending, (step_at, next(order), k + 1, session))

    def event(self, n: int, ts: int, session: _Session, k: int) -> dict[str, object]:
        _, action, item = session.steps[k]
        if self.jitter is not None:
            ts = max(self.start_ms, ts - self.jitter.randint(0, self.jitter_ms))
        return {
            "event_id": f"ck-{self.seed}-{n}",
            "ts": ts,
            "user_id": session.user_id,
            "session_hint": session.hint,
            "item_id": self.item_ids[item],
            "category": self.categories[self.item_category[item]],
            "action": action,
            "is_bot": session.is_bot,
        }
