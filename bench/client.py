"""HTTP load against the real API: sequential, and N in flight on one event loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

PATH = "/assessments/refresh-assessments"


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # completion times, for windows in a soak
    errors: int = 0
    elapsed: float = 0.0
    last_error: str = ""


def sequential(url: str, keys: list[str], body: dict[str, Any], n: int) -> Run:
    run = Run()
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            response = client.post(PATH, json=body, headers={"apiKey": keys[i % len(keys)]})
            _record(run, t0, response)
        run.elapsed = time.perf_counter() - started
    return run


def concurrent(url: str, keys: list[str], body: dict[str, Any], n: int | None, in_flight: int,
               seconds: float | None = None) -> Run:
    """`n` requests, or as many as fit in `seconds`, with `in_flight` outstanding."""
    return asyncio.run(_concurrent(url, keys, body, n, in_flight, seconds))


async def _concurrent(url: str, keys: list[str], body: dict[str, Any], n: int | None, in_flight: int,
                      seconds: float | None) -> Run:
    run = Run()
    counter = itertools.count()
    # One client (one keep-alive connection) per worker: httpcore's shared pool
    # re-scans every connection on every request, which at 50 connections cost
    # ~9 ms of client CPU per request here. Plain HTTP: no TLS context to build.
    clients = [httpx.AsyncClient(base_url=url, timeout=60, verify=False, limits=httpx.Limits(max_connections=1))
               for _ in range(in_flight)]
    started = time.perf_counter()
    deadline = started + seconds if seconds else None

    async def worker(http: httpx.AsyncClient) -> None:
        while True:
            i = next(counter)
            if (n is not None and i >= n) or (deadline is not None and time.perf_counter() >= deadline):
                return
            t0 = time.perf_counter()
            try:
                response = await http.post(PATH, json=body, headers={"apiKey": keys[i % len(keys)]})
            except httpx.HTTPError as exc:
                run.errors += 1
                run.last_error = repr(exc)
                continue
            _record(run, t0, response)

    try:
        await asyncio.gather(*(worker(http) for http in clients))
        run.elapsed = time.perf_counter() - started
    finally:
        for http in clients:
            await http.aclose()
    return run


def _record(run: Run, t0: float, response: httpx.Response) -> None:
    now = time.perf_counter()
    if response.status_code == 200:
        run.latencies.append(now - t0)
        run.done_at.append(now)
    else:
        run.errors += 1
        run.last_error = f"{response.status_code} {response.text[:200]}"


def warm_up(url: str, keys: list[str], body: dict[str, Any], need_ok: int = 20, timeout: float = 60) -> None:
    """Until the consumer has joined its group and answers `need_ok` in a row."""
    deadline = time.monotonic() + timeout
    ok = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while ok < need_ok:
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not answering 200 after {timeout} s")
            response = client.post(PATH, json=body, headers={"apiKey": keys[ok % len(keys)]})
            ok = ok + 1 if response.status_code == 200 else 0
