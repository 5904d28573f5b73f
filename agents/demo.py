"""Seeded demo traffic: Transaction v1 dicts with injected fraud episodes.

Pure and deterministic: one ``random.Random(seed)`` makes every choice, so the
same DemoConfig always gives byte-identical output.

The world: accounts live in one of ~30 world cities, bill from home, spend a
lognormal amount around their own median during their local daytime, mostly in
a few preferred shops of their home city (card_present, located at the shop)
and sometimes online (card_not_present, no location, shipping to billing).

Fraud comes in episodes, one pattern each, so that every agent has work:

- ``burst``: one account makes 6-10 transactions within a few minutes (velocity);
- ``impossible_travel``: a home purchase, then 10-30 minutes later a
  card_present purchase thousands of km away (geo);
- ``amount_spike``: an account with at least 10 earlier transactions spends
  10-30 times its usual amount (profile);
- ``compromised_merchant``: 25+ distinct accounts at one online merchant within
  an hour, shipping far from billing (velocity per merchant, geo).

Fraudulent transactions carry ``"demo_pattern": "<pattern>"``, an extra field the
contract ignores; the rest carry no such field.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate

import orjson

from agents.contracts import SCHEMA_VERSION, ms_to_rfc3339, rfc3339_to_ms

PATTERNS = ("burst", "impossible_travel", "amount_spike", "compromised_merchant")

# Tags of the extra messages generate_messages interleaves, in the order they cycle.
# Each is the dead-letter reason the orchestrator should give, except "duplicate":
# an exact re-send, which the orchestrator must absorb without a second decision.
MALFORMED_TAGS = (
    "invalid_json",
    "conflicting_duplicate",
    "not_an_object",
    "duplicate",
    "missing_schema_version",
    "invalid_json",
    "unknown_schema_version",
    "invalid_field",
    "invalid_field",
)

CURRENCY = "USD"  # one currency: the agents compare amounts without conversion
FAR_KM = 3000.0  # "thousands of km": no one travels that far in half an hour
EARTH_RADIUS_KM = 6371.0
SLOT_S = 1800  # daytime is decided per half hour (some cities are UTC+5:30)
SLOTS_PER_DAY = 48
SHOP_LOYALTY = 0.9  # share of in-person spending at the account's preferred shops
ESTABLISHED_COUNT = 10  # earlier transactions before an amount spike means anything


@dataclass(frozen=True, slots=True)
class City:
    name: str
    lat: float
    lon: float
    utc_offset_h: float


CITIES = (
    City("São Paulo", -23.5505, -46.6333, -3),
    City("Buenos Aires", -34.6037, -58.3816, -3),
    City("Bogotá", 4.7110, -74.0721, -5),
    City("Lima", -12.0464, -77.0428, -5),
    City("Mexico City", 19.4326, -99.1332, -6),
    City("New York", 40.7128, -74.0060, -5),
    City("Toronto", 43.6532, -79.3832, -5),
    City("Chicago", 41.8781, -87.6298, -6),
    City("Los Angeles", 34.0522, -118.2437, -8),
    City("London", 51.5074, -0.1278, 0),
    City("Paris", 48.8566, 2.3522, 1),
    City("Madrid", 40.4168, -3.7038, 1),
    City("Berlin", 52.5200, 13.4050, 1),
    City("Rome", 41.9028, 12.4964, 1),
    City("Stockholm", 59.3293, 18.0686, 1),
    City("Istanbul", 41.0082, 28.9784, 3),
    City("Cairo", 30.0444, 31.2357, 2),
    City("Lagos", 6.5244, 3.3792, 1),
    City("Nairobi", -1.2921, 36.8219, 3),
    City("Johannesburg", -26.2041, 28.0473, 2),
    City("Dubai", 25.2048, 55.2708, 4),
    City("Mumbai", 19.0760, 72.8777, 5.5),
    City("Bangkok", 13.7563, 100.5018, 7),
    City("Jakarta", -6.2088, 106.8456, 7),
    City("Singapore", 1.3521, 103.8198, 8),
    City("Shanghai", 31.2304, 121.4737, 8),
    City("Seoul", 37.5665, 126.9780, 9),
    City("Tokyo", 35.6762, 139.6503, 9),
    City("Sydney", -33.8688, 151.2093, 10),
    City("Auckland", -36.8485, 174.7633, 12),
)

# ISO 18245 merchant category codes; 0742 (veterinary) keeps its leading zero.
SHOP_CATEGORIES = (
    "5411",  # grocery
    "5812",  # restaurants
    "5814",  # fast food
    "5541",  # fuel
    "5912",  # pharmacy
    "5311",  # department store
    "5691",  # clothing
    "5732",  # electronics
    "5942",  # books
    "4121",  # taxi
    "7011",  # hotel
    "0742",  # veterinary
    "5499",  # convenience
)
ONLINE_CATEGORIES = (
    "5967",  # direct marketing
    "5818",  # digital goods
    "5734",  # software
    "4899",  # streaming
    "5964",  # catalogue
)


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 7
    accounts: int = 200
    merchants: int = 80
    transactions: int = 5000
    start: str = "2025-01-01T00:00:00Z"
    mean_gap_s: float = 20.0
    # About this share of all transactions belongs to fraud episodes; when > 0,
    # each pattern gets at least one episode.
    fraud_rate: float = 0.03
    # 0: none; N: one extra (malformed or duplicate) message after every N transactions.
    malformed_every: int = 0

    def __post_init__(self) -> None:
        if self.accounts < 1 or self.merchants < 1:
            raise ValueError("a demo needs at least one account and one merchant")
        if self.transactions < 0:
            raise ValueError("transactions must be >= 0")
        if not self.mean_gap_s > 0:
            raise ValueError("mean_gap_s must be > 0")
        if not 0 <= self.fraud_rate <= 1:
            raise ValueError("fraud_rate must be in [0, 1]")
        if self.malformed_every < 0:
            raise ValueError("malformed_every must be >= 0")
        rfc3339_to_ms(self.start)


def generate(config: DemoConfig) -> Iterator[dict]:
    """Exactly ``config.transactions`` Transaction v1 dicts, in event-time order."""
    rng = random.Random(config.seed)
    world = _build_world(config, rng)
    plan = _plan_episodes(config, rng)
    everyday_count = max(config.transactions - sum(size for _, size in plan), 0)
    start_s = rfc3339_to_ms(config.start) // 1000
    events = _everyday_traffic(world, config, rng, start_s, everyday_count)
    end_s = events[-1].time_s if events else start_s
    events += _fraud_episodes(world, plan, rng, events, start_s, end_s)
    events.sort(key=lambda e: (e.time_s, e.seq))
    for number, event in enumerate(events[: config.transactions], start=1):
        yield event.as_transaction(f"tx-{number:06d}")


def generate_messages(config: DemoConfig) -> Iterator[tuple[bytes | None, bytes, str | None]]:
    """(key, value, tag) ready to produce to `transactions`.

    tag is None for a valid transaction, "duplicate" for an exact re-send of an
    earlier one, otherwise the dead-letter reason the message should get. With
    ``malformed_every`` = 0 this is exactly ``generate(config)``, encoded.
    """
    # (key, value, transaction) of recent valid messages, for duplicates
    recent: deque[tuple[bytes, bytes, dict]] = deque(maxlen=10)
    faults = 0
    for number, tx in enumerate(generate(config), start=1):
        key = tx["account_id"].encode()
        value = orjson.dumps(tx)
        recent.append((key, value, tx))
        yield key, value, None
        if config.malformed_every and number % config.malformed_every == 0:
            tag, make_fault = _FAULTS[faults % len(_FAULTS)]
            faults += 1
            fault_key, fault_value = make_fault(recent, f"bad-{faults:06d}")
            yield fault_key, fault_value, tag


# -- the world ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    lat: float
    lon: float

    def as_dict(self) -> dict[str, float]:
        return {"lat": self.lat, "lon": self.lon}


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    city: City
    place: Place
    category: str
    online: bool


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    home: City
    billing: Place
    median_amount: float
    activity: float
    day_start_h: int
    day_end_h: int
    card_not_present_share: float
    shops: tuple[Merchant, ...]
    online_shops: tuple[Merchant, ...]

    def is_awake(self, utc_hour: float) -> bool:
        local_hour = (utc_hour + self.home.utc_offset_h) % 24
        return self.day_start_h <= local_hour < self.day_end_h

    def usual_amount(self, rng: random.Random) -> float:
        return round(max(0.5, self.median_amount * rng.lognormvariate(0.0, 0.45)), 2)


@dataclass(frozen=True, slots=True)
class World:
    accounts: tuple[Account, ...]
    shops_by_city: dict[str, tuple[Merchant, ...]]
    online_merchants: tuple[Merchant, ...]
    # per half-hour slot of the UTC day: (awake accounts, cumulative activity)
    awake_by_slot: tuple[tuple[tuple[Account, ...], tuple[float, ...]], ...]
    # per slot: traffic relative to the daily average, as more or fewer people are awake
    traffic_by_slot: tuple[float, ...]


@dataclass(slots=True)
class Event:
    time_s: int
    seq: int
    account: Account
    merchant: Merchant
    amount: float
    channel: str
    location: Place | None
    shipping: Place | None
    pattern: str | None

    def as_transaction(self, transaction_id: str) -> dict:
        tx: dict = {
            "schema_version": SCHEMA_VERSION,
            "transaction_id": transaction_id,
            "account_id": self.account.account_id,
            "amount": self.amount,
            "currency": CURRENCY,
            "timestamp": ms_to_rfc3339(self.time_s * 1000),
            "merchant_id": self.merchant.merchant_id,
            "channel": self.channel,
        }
        if self.location is not None:
            tx["location"] = self.location.as_dict()
        tx["billing_location"] = self.account.billing.as_dict()
        if self.shipping is not None:
            tx["shipping_location"] = self.shipping.as_dict()
        tx["merchant_category"] = self.merchant.category
        if self.pattern is not None:
            tx["demo_pattern"] = self.pattern
        return tx


def _build_world(config: DemoConfig, rng: random.Random) -> World:
    online_count = config.merchants // 5 if config.merchants > 1 else 0
    shop_count = config.merchants - online_count
    cities = list(CITIES)
    rng.shuffle(cities)
    merchants = []
    for index in range(config.merchants):
        merchant_id = f"m-{index + 1:04d}"
        if index < shop_count:
            city = cities[index % len(cities)]
            category = rng.choice(SHOP_CATEGORIES)
        else:
            city = rng.choice(CITIES)
            category = rng.choice(ONLINE_CATEGORIES)
        online = index >= shop_count
        merchants.append(Merchant(merchant_id, city, _near(rng, city, 0.03), category, online))

    shops_by_city: dict[str, list[Merchant]] = {}
    for merchant in merchants:
        if not merchant.online:
            shops_by_city.setdefault(merchant.city.name, []).append(merchant)
    online_merchants = tuple(m for m in merchants if m.online)
    # Everyone lives where there are shops, so an everyday purchase is near home.
    home_cities = [c for c in cities if c.name in shops_by_city]

    accounts = []
    for index in range(config.accounts):
        home = rng.choice(home_cities)
        local_shops = shops_by_city[home.name]
        shops = rng.sample(local_shops, k=min(len(local_shops), rng.randint(1, 4)))
        online_shops = rng.sample(online_merchants, k=min(len(online_merchants), rng.randint(1, 2)))
        median_amount = min(max(rng.lognormvariate(math.log(35.0), 0.7), 4.0), 500.0)
        accounts.append(
            Account(
                account_id=f"acct-{index + 1:04d}",
                home=home,
                billing=_near(rng, home, 0.08),
                median_amount=round(median_amount, 2),
                activity=min(max(rng.lognormvariate(0.0, 0.35), 0.5), 2.0),
                day_start_h=rng.randint(6, 9),
                day_end_h=rng.randint(20, 23),
                card_not_present_share=rng.uniform(0.05, 0.3),
                shops=tuple(shops),
                online_shops=tuple(online_shops),
            )
        )

    awake_by_slot = []
    for slot in range(SLOTS_PER_DAY):
        awake = tuple(a for a in accounts if a.is_awake(slot * SLOT_S / 3600)) or tuple(accounts)
        awake_by_slot.append((awake, tuple(accumulate(a.activity for a in awake))))
    awake_activity = [cumulative[-1] for _, cumulative in awake_by_slot]
    average_activity = sum(awake_activity) / SLOTS_PER_DAY
    return World(
        accounts=tuple(accounts),
        shops_by_city={name: tuple(shops) for name, shops in shops_by_city.items()},
        online_merchants=online_merchants,
        awake_by_slot=tuple(awake_by_slot),
        traffic_by_slot=tuple(activity / average_activity for activity in awake_activity),
    )


def _near(rng: random.Random, city: City, spread_deg: float) -> Place:
    lat = min(max(city.lat + rng.uniform(-spread_deg, spread_deg), -90.0), 90.0)
    lon_spread = spread_deg / max(math.cos(math.radians(lat)), 0.1)
    lon = (city.lon + rng.uniform(-lon_spread, lon_spread) + 180.0) % 360.0 - 180.0
    return Place(round(lat, 4), round(lon, 4))


def _distance_km(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    d_lat = math.radians(b_lat - a_lat)
    d_lon = math.radians(b_lon - a_lon)
    h = (
        math.sin(d_lat / 2) ** 2
        + math.cos(math.radians(a_lat)) * math.cos(math.radians(b_lat)) * math.sin(d_lon / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def _km_between_cities(a: City, b: City) -> float:
    return _distance_km(a.lat, a.lon, b.lat, b.lon)


# -- everyday traffic ----------------------------------------------------------


def _everyday_traffic(
    world: World, config: DemoConfig, rng: random.Random, start_s: int, count: int
) -> list[Event]:
    events: list[Event] = []
    time_s = start_s
    for seq in range(count):
        # Each awake account keeps its own pace, so the stream is busier when
        # more of the world is awake; over a day the mean gap is mean_gap_s.
        traffic = world.traffic_by_slot[(time_s // SLOT_S) % SLOTS_PER_DAY]
        time_s += round(rng.expovariate(1.0 / config.mean_gap_s) / traffic)
        awake, cumulative = world.awake_by_slot[(time_s // SLOT_S) % SLOTS_PER_DAY]
        account = rng.choices(awake, cum_weights=cumulative)[0]
        events.append(_everyday_event(world, rng, account, time_s, seq))
    return events


def _everyday_event(
    world: World,
    rng: random.Random,
    account: Account,
    time_s: int,
    seq: int,
    *,
    amount: float | None = None,
    pattern: str | None = None,
    online_share: float | None = None,
) -> Event:
    if amount is None:
        amount = account.usual_amount(rng)
    if online_share is None:
        online_share = account.card_not_present_share
    if account.online_shops and rng.random() < online_share:
        merchant = rng.choice(account.online_shops)
        # Online there is no point of sale; the goods go to the billing address.
        return Event(
            time_s,
            seq,
            account,
            merchant,
            amount,
            "card_not_present",
            None,
            account.billing,
            pattern,
        )
    if rng.random() < SHOP_LOYALTY:
        merchant = rng.choice(account.shops)
    else:
        merchant = rng.choice(world.shops_by_city[account.home.name])
    return Event(
        time_s, seq, account, merchant, amount, "card_present", merchant.place, None, pattern
    )


# -- fraud episodes ----------------------------------------------------------


def _plan_episodes(config: DemoConfig, rng: random.Random) -> list[tuple[str, int]]:
    """(pattern, transaction count) of each episode, in rounds of every pattern."""
    if config.fraud_rate <= 0 or config.transactions == 0:
        return []
    budget = round(config.transactions * config.fraud_rate)
    plan: list[tuple[str, int]] = []
    planned = 0
    while True:
        patterns = list(PATTERNS)
        rng.shuffle(patterns)
        for pattern in patterns:
            if len(plan) >= len(PATTERNS) and planned >= budget:
                return plan
            size = _episode_size(pattern, config, rng)
            plan.append((pattern, size))
            planned += size


def _episode_size(pattern: str, config: DemoConfig, rng: random.Random) -> int:
    if pattern == "burst":
        return rng.randint(6, 10)
    if pattern == "impossible_travel":
        return 2  # the honest purchase at home, then the one far away
    if pattern == "amount_spike":
        return 1
    return min(rng.randint(25, 35), config.accounts)


def _fraud_episodes(
    world: World,
    plan: list[tuple[str, int]],
    rng: random.Random,
    everyday: list[Event],
    start_s: int,
    end_s: int,
) -> list[Event]:
    span_s = end_s - start_s
    # account_id -> event times of its everyday transactions, ascending
    history: dict[str, list[int]] = {}
    for event in everyday:
        history.setdefault(event.account.account_id, []).append(event.time_s)
    victims: list[str] = []  # accounts already hit by a single-account episode
    seq = len(everyday)
    events: list[Event] = []
    for pattern, size in plan:
        if pattern == "amount_spike":
            # Late in the stream, so that most accounts have a profile by then.
            start = rng.randint(start_s + span_s // 2, start_s + span_s * 19 // 20)
            account, start = _established_account(world, rng, history, victims, start, end_s)
        else:
            start = rng.randint(start_s + span_s // 20, start_s + span_s * 19 // 20)
            account = _fresh_victim(world, rng, victims)
        if pattern == "burst":
            episode = _burst(world, rng, account, start, size, seq)
        elif pattern == "impossible_travel":
            episode = _impossible_travel(world, rng, account, start, seq)
        elif pattern == "amount_spike":
            spike = round(account.median_amount * rng.uniform(10, 30), 2)
            episode = [
                _everyday_event(world, rng, account, start, seq, amount=spike, pattern=pattern)
            ]
        else:
            episode = _compromised_merchant(world, rng, start, size, seq)
        if pattern != "compromised_merchant":
            victims.append(account.account_id)
        seq += len(episode)
        events += episode
    return events


def _fresh_victim(world: World, rng: random.Random, victims: list[str]) -> Account:
    fresh = [a for a in world.accounts if a.account_id not in victims]
    return rng.choice(fresh or world.accounts)


def _established_account(
    world: World,
    rng: random.Random,
    history: dict[str, list[int]],
    victims: list[str],
    time_s: int,
    end_s: int,
) -> tuple[Account, int]:
    """An account with enough history before time_s; later, or the busiest, if none has."""

    def earlier_count(account: Account, at_s: int) -> int:
        return bisect_right(history.get(account.account_id, []), at_s)

    for at_s in (time_s, end_s):
        established = [
            a
            for a in world.accounts
            if a.account_id not in victims and earlier_count(a, at_s) >= ESTABLISHED_COUNT
        ]
        if established:
            return rng.choice(established), at_s
    busiest = max(world.accounts, key=lambda a: earlier_count(a, end_s))
    return busiest, end_s


def _burst(
    world: World, rng: random.Random, account: Account, start_s: int, size: int, seq: int
) -> list[Event]:
    events = []
    time_s = start_s
    for offset in range(size):
        amount = round(account.median_amount * rng.uniform(0.3, 1.5), 2)
        events.append(
            _everyday_event(
                world,
                rng,
                account,
                time_s,
                seq + offset,
                amount=max(amount, 0.5),
                pattern="burst",
                online_share=0.7,
            )
        )
        time_s += rng.randint(5, 40)
    return events


def _impossible_travel(
    world: World, rng: random.Random, account: Account, start_s: int, seq: int
) -> list[Event]:
    home = account.home
    far_cities = [
        name
        for name, shops in world.shops_by_city.items()
        if _km_between_cities(home, shops[0].city) >= FAR_KM
    ]
    if far_cities:
        merchant = rng.choice(world.shops_by_city[rng.choice(far_cities)])
    else:
        every_shop = [m for shops in world.shops_by_city.values() for m in shops]
        merchant = max(every_shop, key=lambda m: _km_between_cities(home, m.city))
    at_home = _everyday_event(world, rng, account, start_s, seq, online_share=0.0)
    away_s = start_s + rng.randint(10 * 60, 30 * 60)
    amount = round(account.median_amount * rng.uniform(1, 4), 2)
    away = Event(
        away_s,
        seq + 1,
        account,
        merchant,
        amount,
        "card_present",
        merchant.place,
        None,
        "impossible_travel",
    )
    return [at_home, away]


def _compromised_merchant(
    world: World, rng: random.Random, start_s: int, size: int, seq: int
) -> list[Event]:
    merchant = rng.choice(world.online_merchants or world.accounts[0].shops)
    drop = rng.choice(CITIES)  # where the stolen goods are shipped
    accounts = rng.sample(world.accounts, k=size)
    times = sorted(start_s + rng.randint(0, 55 * 60) for _ in accounts)
    events = []
    for offset, (account, time_s) in enumerate(zip(accounts, times, strict=True)):
        destination = drop
        if _km_between_cities(account.home, drop) < FAR_KM:
            destination = rng.choice(
                [c for c in CITIES if _km_between_cities(account.home, c) >= FAR_KM]
            )
        events.append(
            Event(
                time_s,
                seq + offset,
                account,
                merchant,
                round(rng.uniform(150, 900), 2),
                "card_not_present",
                None,
                _near(rng, destination, 0.01),
                "compromised_merchant",
            )
        )
    return events


# -- malformed messages ------------------------------------------------------

# recent valid messages: (key, value, transaction), oldest first
Recent = deque[tuple[bytes, bytes, dict]]


def _truncated_json(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    _, value, _ = recent[-1]
    return None, value[: len(value) // 2]


def _utf16_json(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    # A producer that wrote UTF-16: the bytes start with a BOM that is not UTF-8.
    _, _, tx = recent[-1]
    return None, orjson.dumps({**tx, "transaction_id": bad_id}).decode().encode("utf-16")


def _json_array(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    _, _, tx = recent[-1]
    return None, orjson.dumps([{**tx, "transaction_id": bad_id}])


def _without_schema_version(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, _, tx = recent[-1]
    body = {k: v for k, v in tx.items() if k != "schema_version"}
    return key, orjson.dumps({**body, "transaction_id": bad_id})


def _future_schema_version(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, _, tx = recent[-1]
    return key, orjson.dumps({**tx, "schema_version": 7, "transaction_id": bad_id})


def _negative_amount(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, _, tx = recent[-1]
    return key, orjson.dumps({**tx, "amount": -tx["amount"], "transaction_id": bad_id})


def _lower_case_currency(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, _, tx = recent[-1]
    return key, orjson.dumps({**tx, "currency": "usd", "transaction_id": bad_id})


def _changed_amount(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, _, tx = recent[0]
    return key, orjson.dumps({**tx, "amount": round(tx["amount"] + 1.0, 2)})


def _exact_resend(recent: Recent, bad_id: str) -> tuple[bytes | None, bytes]:
    key, value, _ = recent[0]
    return key, value


_FAULTS: tuple[tuple[str, Callable[[Recent, str], tuple[bytes | None, bytes]]], ...] = tuple(
    zip(
        MALFORMED_TAGS,
        (
            _truncated_json,
            _changed_amount,
            _json_array,
            _exact_resend,
            _without_schema_version,
            _utf16_json,
            _future_schema_version,
            _negative_amount,
            _lower_case_currency,
        ),
        strict=True,
    )
)
