"""Seeded card transactions with realistic skew and labelled fraud attacks (pure, no I/O).

The background is ordinary card use: Zipf-like card activity (a few cards make most of the
transactions) and merchant popularity, log-normal amounts per merchant category scaled per card,
each card with a home country (rare travel abroad), one or two usual devices and a few IPs.

Three attack models are injected, every one of their events labelled (`is_fraud`, `fraud_type`,
`attack_id`):

- ``card_testing``: a stolen card number is checked with 8-25 small amounts (0.50-5.00) at as many
  different merchants, 2-20 s apart (all within 8 minutes), from one fraudster device and a new IP
  per attempt;
- ``account_takeover``: 3-6 larger purchases (at least the card's largest legitimate amount so
  far) at high-value merchants, 30 s-5 min apart, from a device, a country and an IP the card has
  never used;
- ``amount_spike``: one purchase of 5-15 times the card's largest legitimate amount so far, from
  the card's usual device, IP and home country (only the amount is anomalous).

Attacks keep their own timing in absolute event time (squeezed into half the stream when the
stream is shorter than twice the attack) and are merged into the background by event time, so
`ts` is non-decreasing in generation order (unless `jitter_ms` is set). `labels` derives the later
chargeback/label events for a labels topic.

Memory: `iter_events` holds one small profile per card seen so far, the attack plan (about
`fraud_fraction * count` pending attack events) and nothing per emitted event, so 1M+ events can be
streamed; `generate` is `list(iter_events(...))`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

TOPIC = "rtml.fraud.transactions"
LABELS_TOPIC = "rtml.fraud.labels"
DEFAULT_RATE = 50.0  # events per second of event time when `rate` is None
DEFAULT_FRAUD_FRACTION = 0.015
FRAUD_TYPES = ("card_testing", "account_takeover", "amount_spike")
DEFAULT_ATTACK_MIX: Mapping[str, float] = {
    "card_testing": 0.25,
    "account_takeover": 0.35,
    "amount_spike": 0.40,
}  # share of attacks (not of fraudulent events: a card-testing burst has 8-25 events)

# ISO-2 country -> (currency, weight as a card's home country). Amounts are in the card's
# billing currency (its home country's), all drawn on one nominal scale: no FX conversion.
COUNTRIES: Mapping[str, tuple[str, float]] = {
    "US": ("USD", 30.0), "GB": ("GBP", 8.0), "DE": ("EUR", 8.0), "FR": ("EUR", 6.0),
    "ES": ("EUR", 4.0), "IT": ("EUR", 4.0), "NL": ("EUR", 3.0), "PL": ("PLN", 2.0),
    "SE": ("SEK", 1.5), "CA": ("CAD", 4.0), "MX": ("MXN", 2.0), "BR": ("BRL", 3.0),
    "AR": ("ARS", 1.0), "AU": ("AUD", 3.0), "JP": ("JPY", 3.0), "KR": ("KRW", 2.0),
    "IN": ("INR", 3.0), "SG": ("SGD", 1.0), "ZA": ("ZAR", 1.0), "TR": ("TRY", 1.0),
    "CN": ("CNY", 1.0), "ID": ("IDR", 1.0), "AE": ("AED", 0.5), "HK": ("HKD", 0.5),
    "NG": ("NGN", 0.5), "RU": ("RUB", 0.5), "UA": ("UAH", 0.5), "RO": ("RON", 0.5),
    "VN": ("VND", 0.5), "PH": ("PHP", 0.5),
}  # fmt: skip

# merchant category -> (median amount, log-normal sigma, share of merchants, high value)
CATEGORIES: Mapping[str, tuple[float, float, float, bool]] = {
    "grocery": (38.0, 0.55, 0.20, False),
    "restaurant": (28.0, 0.60, 0.18, False),
    "fuel": (45.0, 0.40, 0.08, False),
    "pharmacy": (22.0, 0.60, 0.06, False),
    "entertainment": (25.0, 0.70, 0.08, False),
    "retail": (60.0, 0.80, 0.15, False),
    "online": (35.0, 0.90, 0.13, False),
    "electronics": (220.0, 0.80, 0.05, True),
    "travel": (380.0, 0.70, 0.04, True),
    "jewelry": (420.0, 0.90, 0.03, True),
}

CARD_TESTING_AMOUNT = (0.5, 5.0)
CARD_TESTING_SIZE = (8, 25)
CARD_TESTING_GAP_S = (2.0, 20.0)
TAKEOVER_SIZE = (3, 6)
TAKEOVER_GAP_S = (30.0, 300.0)
TAKEOVER_FACTOR = (1.0, 2.5)  # x the card's largest legitimate amount so far
SPIKE_FACTOR = (5.0, 15.0)  # x the card's largest legitimate amount so far
SPIKE_FLOOR = 20.0  # stands in for the largest amount of a card without history
TRAVEL_PROBABILITY = 0.01
MIN_AMOUNT = 0.5

# Label delays after the attack's last transaction (fraud) or the transaction (legit), in hours:
# (median, log-normal sigma); clipped to [LABEL_MIN_DELAY_H, LABEL_MAX_DELAY_H].
LABEL_DELAY_H: Mapping[str, tuple[float, float]] = {
    "card_testing": (48.0, 0.8),  # small amounts: noticed on the statement
    "account_takeover": (12.0, 0.8),  # the owner is locked out and calls quickly
    "amount_spike": (24.0, 0.8),
    "legit": (168.0, 0.5),  # confirmed legitimate after review or an expired dispute window
}
LABEL_MIN_DELAY_H = 1.0
LABEL_MAX_DELAY_H = 30 * 24.0
DEFAULT_LEGIT_LABEL_FRACTION = 0.01

_HOUR_MS = 3_600_000
_CHUNK = 4096


def key_of(event: Mapping[str, object]) -> str:
    """The Kafka key of a transaction or a label: its card (one card's events stay in order)."""
    return str(event["card_id"])


def generate(count: int, **options: Any) -> list[dict[str, object]]:
    """`count` transactions as a list; `iter_events` names and explains the options."""
    return list(iter_events(count, **options))


def iter_events(
    count: int,
    *,
    seed: int = 0,
    start_ms: int,
    rate: float | None = None,
    fraud_fraction: float = DEFAULT_FRAUD_FRACTION,
    jitter_ms: int = 0,
    cards: int | None = None,
    merchants: int | None = None,
    attack_mix: Mapping[str, float] | None = None,
) -> Iterator[dict[str, object]]:
    """Yield `count` card transactions, deterministic for `seed`.

    `rate`: mean events per second of event time (default `DEFAULT_RATE`); the stream spans
    `count / rate` seconds from `start_ms`. `fraud_fraction`: share of fraudulent events (exact up
    to rounding). `jitter_ms` > 0 moves each `ts` back by up to that much (never before
    `start_ms`), so disorder is bounded by `jitter_ms`; it uses its own random stream, so only the
    `ts` values change. `cards` (default `max(50, count // 25)`) and `merchants` (default
    `max(60, count // 200)`) size the populations; `attack_mix` weighs the attack types.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if not 0.0 <= fraud_fraction <= 1.0:
        raise ValueError(f"fraud_fraction must be within [0, 1], got {fraud_fraction}")
    if jitter_ms < 0:
        raise ValueError(f"jitter_ms must be >= 0, got {jitter_ms}")
    mix = dict(attack_mix if attack_mix is not None else DEFAULT_ATTACK_MIX)
    if not mix or set(mix) - set(FRAUD_TYPES) or any(w < 0 for w in mix.values()):
        raise ValueError(f"attack_mix must weigh some of {FRAUD_TYPES}, got {mix}")
    n_cards = cards if cards is not None else max(50, count // 25)
    n_merchants = merchants if merchants is not None else max(60, count // 200)
    if n_cards < 1:
        raise ValueError(f"cards must be >= 1, got {n_cards}")
    if n_merchants < CARD_TESTING_SIZE[1]:
        raise ValueError(f"merchants must be >= {CARD_TESTING_SIZE[1]}, got {n_merchants}")
    world = _World(seed, n_cards, n_merchants, jitter_ms, start_ms)
    span_ms = count * 1000.0 / (rate or DEFAULT_RATE)
    attacks = world.plan_attacks(round(count * fraud_fraction), mix, start_ms, span_ms)
    return world.stream(count, attacks, start_ms, span_ms)


def labels(
    events: Iterable[Mapping[str, object]],
    *,
    seed: int = 0,
    legit_fraction: float = DEFAULT_LEGIT_LABEL_FRACTION,
) -> list[dict[str, object]]:
    """Label events for a labels topic, in label-time order: they arrive hours to days later.

    Every fraudulent transaction gets `label` 1 (a chargeback). The transactions of one attack are
    reported together: `LABEL_DELAY_H[fraud_type]` after the attack's last transaction, plus up to
    an hour each. A seeded sample (`legit_fraction`) of legitimate transactions gets `label` 0
    (confirmed legitimate, about a week later); all other transactions get no label event, so a
    backtest treats "no label by the cut-off" as unknown/legitimate. Each label is
    `{"event_id", "card_id", "label", "ts", "tx_ts"}`: `ts` is the label's event time, always at
    least `LABEL_MIN_DELAY_H` after `tx_ts`, the transaction's `ts`.
    """
    if not 0.0 <= legit_fraction <= 1.0:
        raise ValueError(f"legit_fraction must be within [0, 1], got {legit_fraction}")
    rng = random.Random(f"rtml.fraud.labels-{seed}")
    out: list[dict[str, object]] = []
    attacks: dict[str, list[tuple[str, str, int]]] = {}
    kinds: dict[str, str] = {}
    for event in events:
        tx = (str(event["event_id"]), str(event["card_id"]), int(str(event["ts"])))
        if event["is_fraud"]:
            group = str(event.get("attack_id") or tx[0])
            attacks.setdefault(group, []).append(tx)
            kinds[group] = str(event.get("fraud_type") or "amount_spike")
        elif legit_fraction and rng.random() < legit_fraction:
            out.append(_label(tx, 0, tx[2] + _label_delay_ms(rng, "legit")))
    for group, txs in attacks.items():
        reported = max(ts for _, _, ts in txs) + _label_delay_ms(rng, kinds[group])
        for tx in txs:
            out.append(_label(tx, 1, reported + rng.randrange(_HOUR_MS)))
    out.sort(key=lambda label: (label["ts"], label["event_id"]))
    return out


def _label(tx: tuple[str, str, int], value: int, ts: int) -> dict[str, object]:
    event_id, card_id, tx_ts = tx
    return {"event_id": event_id, "card_id": card_id, "label": value, "ts": ts, "tx_ts": tx_ts}


def _label_delay_ms(rng: random.Random, kind: str) -> int:
    median_h, sigma = LABEL_DELAY_H.get(kind, LABEL_DELAY_H["amount_spike"])
    hours = rng.lognormvariate(math.log(median_h), sigma)
    return int(min(max(hours, LABEL_MIN_DELAY_H), LABEL_MAX_DELAY_H) * _HOUR_MS)


def _zipf_cum_weights(n: int, exponent: float, offset: float) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights 1 / (rank + offset) ** exponent (rank 0 likeliest)."""
    return list(itertools.accumulate(1.0 / (rank + offset) ** exponent for rank in range(n)))


def _residential_ip(rng: random.Random) -> str:
    return f"{rng.randint(24, 99)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _hosting_ip(rng: random.Random) -> str:
    """Addresses from other first octets than residential ones: never a card's usual IP."""
    first = rng.choice((103, 141, 176, 185, 193, 195))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def _device(rng: random.Random) -> str:
    return f"{rng.getrandbits(48):012x}"


class _Card:
    """A card's profile and what the generator remembers of its history."""

    __slots__ = ("card_id", "home", "currency", "devices", "ips", "scale", "abroad", "legit_max")

    def __init__(self, card_id: str, rng: random.Random, homes: list[str], home_cum: list[float]):
        self.card_id = card_id
        self.home = rng.choices(homes, cum_weights=home_cum)[0]
        self.currency = COUNTRIES[self.home][0]
        self.devices = [_device(rng) for _ in range(1 if rng.random() < 0.6 else 2)]
        self.ips = [_residential_ip(rng) for _ in range(rng.randint(2, 4))]
        self.scale = rng.lognormvariate(0.0, 0.35)  # some card holders spend more than others
        self.abroad: set[str] | None = None  # countries other than home seen on this card
        self.legit_max = 0.0  # largest legitimate amount so far

    def visit(self, country: str) -> None:
        if country != self.home:
            if self.abroad is None:
                self.abroad = set()
            self.abroad.add(country)

    def seen(self, country: str) -> bool:
        return country == self.home or (self.abroad is not None and country in self.abroad)


@dataclass
class _Attack:
    attack_id: str
    kind: str
    card: int
    times: list[float]
    merchants: list[int] = field(default_factory=list)  # card testing: distinct merchants
    device: str = ""  # card testing and account takeover: the fraudster's device
    country: str = ""  # account takeover: chosen at its first event (never seen on the card)
    ip: str = ""  # account takeover (card testing uses a new IP per attempt)


class _World:
    """Cards, merchants and one seeded random stream; emits events in event-time order."""

    def __init__(self, seed: int, n_cards: int, n_merchants: int, jitter_ms: int, start_ms: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.jitter = random.Random(f"rtml.fraud.jitter-{seed}") if jitter_ms else None
        self.jitter_ms = jitter_ms
        self.start_ms = start_ms
        rng = self.rng
        numbers = rng.sample(range(max(10**6, 10 * n_cards)), n_cards)
        self.card_ids = [f"card-{number:06d}" for number in numbers]  # index 0 is the busiest
        self.card_cum = _zipf_cum_weights(n_cards, 0.75, 10.0)
        self.cards: dict[int, _Card] = {}
        self.homes = list(COUNTRIES)
        self.home_cum = list(itertools.accumulate(weight for _, weight in COUNTRIES.values()))
        names = list(CATEGORIES)
        shares = [CATEGORIES[name][2] for name in names]
        self.merchant_ids = [
            f"m-{number:05d}"
            for number in rng.sample(range(max(10**5, 10 * n_merchants)), n_merchants)
        ]
        self.merchant_category = rng.choices(names, shares, k=n_merchants)
        self.merchant_cum = _zipf_cum_weights(n_merchants, 1.0, 2.0)
        self.high_value = [
            m for m, name in enumerate(self.merchant_category) if CATEGORIES[name][3]
        ] or list(range(n_merchants))
        self.log_params = {name: (math.log(v[0]), v[1]) for name, v in CATEGORIES.items()}

    def card(self, index: int) -> _Card:
        card = self.cards.get(index)
        if card is None:
            card = self.cards[index] = _Card(
                self.card_ids[index], self.rng, self.homes, self.home_cum
            )
        return card

    def plan_attacks(
        self, budget: int, mix: dict[str, float], start_ms: int, span_ms: float
    ) -> list[_Attack]:
        """Attacks totalling exactly `budget` events, each placed inside the stream's span."""
        rng = self.rng
        kinds = list(mix)
        weights = [mix[kind] for kind in kinds]
        attacks: list[_Attack] = []
        all_cards = range(len(self.card_ids))
        while budget > 0:
            kind = rng.choices(kinds, weights)[0]
            if kind == "card_testing":
                size, low_gap, high_gap = rng.randint(*CARD_TESTING_SIZE), *CARD_TESTING_GAP_S
                minimum = CARD_TESTING_SIZE[0]
            elif kind == "account_takeover":
                size, low_gap, high_gap = rng.randint(*TAKEOVER_SIZE), *TAKEOVER_GAP_S
                minimum = 2
            else:
                size, low_gap, high_gap, minimum = 1, 0.0, 0.0, 1
            if size > budget:
                if budget >= minimum:
                    size = budget
                else:
                    kind, size = "amount_spike", 1
            offsets = [0.0]
            for _ in range(size - 1):
                offsets.append(offsets[-1] + rng.uniform(low_gap, high_gap) * 1000.0)
            duration = offsets[-1]
            if duration > span_ms / 2:  # a short stream: squeeze the attack into half of it
                offsets = [offset * span_ms / 2 / duration for offset in offsets]
                duration = span_ms / 2
            begin = start_ms + rng.uniform(0.0, span_ms - duration)
            attack = _Attack(
                f"atk-{self.seed}-{len(attacks)}", kind, 0, [begin + o for o in offsets]
            )
            if kind == "card_testing":  # stolen numbers: any card, busy or not
                attack.card = rng.choice(all_cards)
                attack.merchants = rng.sample(range(len(self.merchant_ids)), size)
                attack.device = _device(rng)
            else:  # takeovers and spikes hit active cards
                attack.card = rng.choices(all_cards, cum_weights=self.card_cum)[0]
                if kind == "account_takeover":
                    attack.device = _device(rng)
                    attack.ip = _hosting_ip(rng)
            attacks.append(attack)
            budget -= size
        return attacks

    def stream(
        self, count: int, attacks: list[_Attack], start_ms: int, span_ms: float
    ) -> Iterator[dict[str, object]]:
        pending = [
            (t, i, k, attack)
            for i, attack in enumerate(attacks)
            for k, t in enumerate(attack.times)
        ]
        heapq.heapify(pending)
        n_normal = count - len(pending)
        step = span_ms / n_normal if n_normal else 0.0
        rng = self.rng
        cards = range(len(self.card_ids))
        merchants = range(len(self.merchant_ids))
        emitted = 0
        for chunk_start in range(0, n_normal, _CHUNK):
            size = min(_CHUNK, n_normal - chunk_start)
            card_draws = rng.choices(cards, cum_weights=self.card_cum, k=size)
            merchant_draws = rng.choices(merchants, cum_weights=self.merchant_cum, k=size)
            for j in range(size):
                t = start_ms + (chunk_start + j) * step
                while pending and pending[0][0] <= t:
                    at, _, k, attack = heapq.heappop(pending)
                    yield self.attack_event(emitted, int(at), attack, k)
                    emitted += 1
                yield self.legit_event(emitted, int(t), card_draws[j], merchant_draws[j])
                emitted += 1
        while pending:
            at, _, k, attack = heapq.heappop(pending)
            yield self.attack_event(emitted, int(at), attack, k)
            emitted += 1

    def legit_event(self, n: int, ts: int, card_index: int, merchant: int) -> dict[str, object]:
        rng = self.rng
        card = self.card(card_index)
        category = self.merchant_category[merchant]
        mu, sigma = self.log_params[category]
        amount = max(round(rng.lognormvariate(mu, sigma) * card.scale, 2), MIN_AMOUNT)
        if amount > card.legit_max:
            card.legit_max = amount
        country = card.home
        if rng.random() < TRAVEL_PROBABILITY:
            country = rng.choices(self.homes, cum_weights=self.home_cum)[0]
            card.visit(country)
        devices = card.devices
        device = devices[0] if len(devices) == 1 or rng.random() < 0.8 else devices[1]
        return self.event(
            n, ts, card, merchant, amount, country, device, rng.choice(card.ips), None, None
        )

    def attack_event(self, n: int, ts: int, attack: _Attack, k: int) -> dict[str, object]:
        rng = self.rng
        card = self.card(attack.card)
        if attack.kind == "card_testing":
            amount = round(rng.uniform(*CARD_TESTING_AMOUNT), 2)
            merchant = attack.merchants[k]
            return self.event(
                n, ts, card, merchant, amount, card.home, attack.device, _hosting_ip(rng),
                attack.kind, attack.attack_id,
            )  # fmt: skip
        merchant = rng.choice(self.high_value)
        base = card.legit_max or SPIKE_FLOOR
        if attack.kind == "account_takeover":
            if not attack.country:
                unseen = [c for c in self.homes if not card.seen(c)]
                attack.country = rng.choice(unseen or [c for c in self.homes if c != card.home])
                card.visit(attack.country)
            mu, sigma = self.log_params[self.merchant_category[merchant]]
            drawn = rng.lognormvariate(mu, sigma)
            amount = round(max(drawn, base * rng.uniform(*TAKEOVER_FACTOR)), 2)
            return self.event(
                n, ts, card, merchant, amount, attack.country, attack.device, attack.ip,
                attack.kind, attack.attack_id,
            )  # fmt: skip
        amount = round(base * rng.uniform(*SPIKE_FACTOR), 2)
        return self.event(
            n, ts, card, merchant, amount, card.home, card.devices[0], card.ips[0],
            attack.kind, attack.attack_id,
        )  # fmt: skip

    def event(
        self,
        n: int,
        ts: int,
        card: _Card,
        merchant: int,
        amount: float,
        country: str,
        device: str,
        ip: str,
        fraud_type: str | None,
        attack_id: str | None,
    ) -> dict[str, object]:
        if self.jitter is not None:
            ts = max(self.start_ms, ts - self.jitter.randint(0, self.jitter_ms))
        return {
            "event_id": f"tx-{self.seed}-{n}",
            "ts": ts,
            "card_id": card.card_id,
            "merchant_id": self.merchant_ids[merchant],
            "merchant_category": self.merchant_category[merchant],
            "amount": amount,
            "currency": card.currency,
            "country": country,
            "device_id": device,
            "ip": ip,
            "is_fraud": fraud_type is not None,
            "fraud_type": fraud_type,
            "attack_id": attack_id,
        }
