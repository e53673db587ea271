"""Latency statistics, the printed tables and the JSON file."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def stats(latencies_s: list[float], elapsed_s: float | None = None, errors: int = 0) -> dict[str, Any]:
    """Nearest-rank percentiles in ms; throughput over the wall time of the run."""
    ordered = sorted(latencies_s)
    n = len(ordered)

    def pct(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * n) - 1)] * 1000, 2) if n else float("nan")

    out: dict[str, Any] = {"n": n, "errors": errors, "median_ms": pct(50), "p50_ms": pct(50), "p95_ms": pct(95),
                           "p99_ms": pct(99), "max_ms": round(ordered[-1] * 1000, 2) if n else float("nan"),
                           "mean_ms": round(sum(ordered) / n * 1000, 2) if n else float("nan")}
    if elapsed_s:
        out["throughput_per_s"] = round(n / elapsed_s, 1)
    return out


def ratio(value: float, floor: float) -> float:
    return round(value / floor, 2) if floor and not math.isnan(floor) else float("nan")


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = [f"\n== {title}", "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def latency_rows(named: dict[str, dict[str, Any]]) -> list[list[Any]]:
    return [[name, s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"], s.get("throughput_per_s", float("nan")),
             s["errors"]] for name, s in named.items()]


LATENCY_HEADER = ["measurement", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "errors"]


def write_json(results: dict[str, Any], quick: bool, partial: str = "", broker: str = "") -> Path:
    """bench/results/<date>[-<broker>][-quick][-s<scenarios>].json: a run on
    both brokers is <date>.json, one on a single broker names it."""
    RESULTS_DIR.mkdir(exist_ok=True)
    # A smoke run, a run of some scenarios or on one broker must not overwrite the day's full results.
    suffix = (f"-{broker}" if broker else "") + ("-quick" if quick else "") + (f"-s{partial}" if partial else "")
    path = RESULTS_DIR / f"{date.today().isoformat()}{suffix}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    tmp.replace(path)
    return path
