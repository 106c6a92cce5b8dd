"""Per-event sliding windows: Flink's OVER ... RANGE against rtml's SLIDING_WINDOW_FEATURES.

    .venv/bin/python -m bench.windows [--out bench/results/windows.json]

Each variant runs twice in a fresh embedded MiniCluster (RocksDB, parallelism 1) on generated events
(1000 per second of event time, datagen, no Kafka), at a small and a large event count; the marginal
rate between the two runs leaves out start-up and planning. "sparse" spreads events over many keys
(a few dozen events per key in a 5 min window), "busy" over 10 keys (thousands per key), as a card
under attack or a popular merchant. The SLIDING_WINDOW_FEATURES variants count distinct values of
one item column (merchant), or of three (merchant, country, ip) to show what each costs.

The cache comparison runs fraud_card's windows and item columns (a few dozen merchants per key,
one country, IP and device) with the function's cache of recent keys' state entries and without
it (`cache_entries => 0`), alternating, on 200 keys 20 ms apart in event time and on 2000 keys
400 ms apart (33 h: every window evicts). `--only windows|cache` runs one part. Compare the
ratios, not the absolute figures: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from rtml.settings import JobSettings
from rtml.versions import UDFS_JAR

RUN = r"""
import sys, time
from pyflink.common import Configuration
from pyflink.table import EnvironmentSettings, TableEnvironment
events, keys, query, jar = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
step_ms = int(sys.argv[5])  # event time between consecutive events
conf = Configuration()
for key, value in {"state.backend.type": "rocksdb", "parallelism.default": "1",
                   "table.local-time-zone": "UTC", "pipeline.jars": jar}.items():
    conf.set_string(key, value)
env = TableEnvironment.create(
    EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build())
env.execute_sql("CREATE TEMPORARY SYSTEM FUNCTION SLIDING_WINDOW_FEATURES AS "
                "'dev.rtml.udfs.SlidingWindowFeatures' LANGUAGE JAVA")
env.execute_sql(f'''CREATE TABLE events (
  seq BIGINT, k AS seq % {keys}, amount AS CAST(seq % 997 AS DOUBLE) / 10,
  merchant AS CAST(seq % 101 AS STRING), country AS CAST(seq % 7 AS STRING),
  ip AS CAST(seq % 1009 AS STRING),
  -- as a card's: a few dozen merchants, and one country, IP and device
  card_merchant AS CAST((seq * 31) % 53 AS STRING),
  card_country AS CAST((seq % {keys}) % 12 AS STRING),
  card_ip AS CAST((seq % {keys}) % 997 AS STRING), card_device AS CAST(seq % {keys} AS STRING),
  event_time AS TO_TIMESTAMP_LTZ(1763700000000 + seq * {step_ms}, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '{events}', 'rows-per-second' = '1000000000',
  'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0', 'fields.seq.end' = '{events - 1}')''')
env.execute_sql(
    "CREATE TABLE results (k BIGINT, c BIGINT, s DOUBLE) WITH ('connector' = 'blackhole')")
started = time.perf_counter()
env.execute_sql("INSERT INTO results " + query).wait()
print(time.perf_counter() - started)
"""

OVER_5_MIN = """SELECT k, COUNT(*) OVER w, SUM(amount) OVER w FROM events WINDOW w AS (
  PARTITION BY k ORDER BY event_time RANGE BETWEEN INTERVAL '5' MINUTE PRECEDING AND CURRENT ROW)"""


def ptf(windows: str, item_columns: str = "merchant", extra: str = "") -> str:
    return f"""SELECT k, counts[1], sums[1] FROM SLIDING_WINDOW_FEATURES(
  input => TABLE events PARTITION BY k, value_column => 'amount', {extra}
  item_columns => '{item_columns}', windows => '{windows}', on_time => DESCRIPTOR(event_time))"""


PASS_THROUGH = "SELECT k, seq, amount FROM events"

VARIANTS = {
    "source_only": PASS_THROUGH,
    "over_range_5min": OVER_5_MIN,
    "sliding_window_features_5min": ptf("5 min"),
    "sliding_window_features_1m_5m_1h_24h": ptf("1 min, 5 min, 1 h, 24 h"),
    "sliding_window_features_1m_5m_1h_24h_3_items": ptf(
        "1 min, 5 min, 1 h, 24 h", "merchant, country, ip"
    ),
}
SCENARIOS = {"sparse": 5_000, "busy": 10}  # keys

# fraud_card's windows and item columns, with and without the function's cache of recent keys'
# state entries. (keys, event time between events): every window evicts in the second shape.
FRAUD_CARD = ptf("1 min, 5 min, 1 h, 24 h", "card_merchant, card_country, card_ip, card_device")
CACHE_VARIANTS = {
    "fraud_card_windows_cached": FRAUD_CARD,
    "fraud_card_windows_uncached": ptf(
        "1 min, 5 min, 1 h, 24 h",
        "card_merchant, card_country, card_ip, card_device",
        "cache_entries => 0,",
    ),
}
CACHE_SCENARIOS = {"200_keys_20ms": (200, 20), "2000_keys_400ms": (2000, 400)}


def run_once(events: int, keys: int, query: str, jar: str, step_ms: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(events), str(keys), query, jar, str(step_ms)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(result.stdout.strip().splitlines()[-1])


def measure(events: int, keys: int, query: str, jar: str, step_ms: int = 1) -> dict[str, float]:
    small = max(events // 10, 1000)
    t_small = run_once(small, keys, query, jar, step_ms)
    t_large = run_once(events, keys, query, jar, step_ms)
    return {
        "events": events,
        "seconds": round(t_large, 2),
        "events_per_s_marginal": round((events - small) / max(t_large - t_small, 1e-6)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/windows.json"))
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument(
        "--over-busy-events", type=int, default=30_000,
        help="OVER on busy keys is slow: fewer events keep the run short",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=["windows", "cache"],
        help="only the comparison with OVER (windows) or only the cache's (cache)",
    )  # fmt: skip
    args = parser.parse_args()
    jar = (JobSettings().jars_dir / "flink" / UDFS_JAR).resolve()
    if not jar.is_file():
        sys.exit(f"{jar} is missing: run `make setup`")
    report: dict[str, object] = {
        "benchmark": "per-event sliding windows",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    if args.only != "cache":
        report.update(compare_with_over(args, jar.as_uri()))
    if args.only != "windows":
        report.update(compare_cache(args.events, jar.as_uri()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: value for key, value in report.items() if "_vs_" in key}))


def compare_cache(events: int, jar: str) -> dict[str, object]:
    """fraud_card's windows with the cache of recent keys' state and without (cache_entries 0).

    The variants alternate, twice each, so that the machine's drift hits both alike.
    """
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for scenario, (keys, step_ms) in CACHE_SCENARIOS.items():
        results[scenario] = {name: [] for name in CACHE_VARIANTS}
        for _ in range(2):
            for name, query in CACHE_VARIANTS.items():
                results[scenario][name].append(measure(events, keys, query, jar, step_ms))
                print(scenario, name, results[scenario][name][-1], flush=True)
    ratios = {
        scenario: round(
            sum(r["events_per_s_marginal"] for r in rows["fraud_card_windows_cached"])
            / sum(r["events_per_s_marginal"] for r in rows["fraud_card_windows_uncached"]),
            2,
        )  # fmt: skip
        for scenario, rows in results.items()
    }
    return {
        "cache_scenarios": {
            name: {"keys": keys, "event_time_ms_between_events": step_ms}
            for name, (keys, step_ms) in CACHE_SCENARIOS.items()
        },
        "cache_results": results,
        "cached_vs_uncached": ratios,
    }


def compare_with_over(args: argparse.Namespace, jar: str) -> dict[str, object]:
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scenario, keys in SCENARIOS.items():
        results[scenario] = {}
        for name, query in VARIANTS.items():
            events = (
                args.over_busy_events
                if (name, scenario) == ("over_range_5min", "busy")
                else args.events
            )
            results[scenario][name] = measure(events, keys, query, jar)
            print(scenario, name, results[scenario][name], flush=True)
    ratios = {
        scenario: round(
            rows["sliding_window_features_5min"]["events_per_s_marginal"]
            / rows["over_range_5min"]["events_per_s_marginal"],
            2,
        )  # fmt: skip
        for scenario, rows in results.items()
    }
    # What two more item columns cost: 4 windows with 3 item columns against 1, per scenario.
    items_cost = {
        scenario: round(
            rows["sliding_window_features_1m_5m_1h_24h"]["events_per_s_marginal"]
            / rows["sliding_window_features_1m_5m_1h_24h_3_items"]["events_per_s_marginal"],
            2,
        )  # fmt: skip
        for scenario, rows in results.items()
    }
    return {
        "events_per_second_of_event_time": 1000,
        "keys": SCENARIOS,
        "results": results,
        "sliding_window_features_vs_over_range_5min": ratios,
        "slowdown_3_item_columns_vs_1": items_cost,
    }


if __name__ == "__main__":
    main()
