"""What the API runs on: the services its lifespan starts, and its endpoints
read from ``request.state.services``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.applications import Starlette

from producer_api import async_results
from producer_api.api_metrics import serve_metrics_apart, watch_awaited
from producer_api.auth import Gate, KeyCache
from producer_api.publisher import RequestPublisher
from producer_api.ratelimit import RateLimiter
from producer_api.replies import ReplyWaiter
from shared.db import make_engine
from shared.retention import Pruner
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    publisher: RequestPublisher
    waiter: ReplyWaiter
    gate: Gate  # the API key checks (producer_api/auth.py)


def lifespan(settings: Settings) -> Callable[[Starlette], AbstractAsyncContextManager[dict[str, Services]]]:
    """Start the services for the app's lifetime: the reply reader first (it
    must be positioned before any request is published), then the publisher."""

    @asynccontextmanager
    async def run(_app: Starlette) -> AsyncIterator[dict[str, Services]]:
        log.info("configuration: %s", json.dumps(settings.public(), default=str))
        stop_metrics = (serve_metrics_apart(settings.api_metrics_host, settings.api_metrics_port)
                        if settings.api_metrics_port else None)
        loop = asyncio.get_running_loop()
        engine = make_engine(settings.database_url, pool_size=10, max_overflow=10)
        waiter = ReplyWaiter(settings, loop)
        waiter.start()
        watch_awaited(lambda: waiter.awaited)
        publisher = RequestPublisher(settings, loop)
        pruner = (
            Pruner("async request", lambda: async_results.prune(engine, settings.retention_hours * 3600,
                                                                settings.prune_batch_size),
                   settings.prune_batch_size, settings.prune_interval_s).start()
            if settings.prune_interval_s > 0 else None
        )
        try:
            gate = Gate(engine, RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
                        RateLimiter(settings.auth_failure_rate_per_s, settings.auth_failure_burst),
                        KeyCache(settings.api_key_cache_s, settings.api_key_miss_cache_s))
            yield {"services": Services(settings, engine, publisher, waiter, gate)}
        finally:
            publisher.close()
            waiter.stop()
            engine.dispose()
            if stop_metrics is not None:
                stop_metrics()
            if pruner is not None:
                pruner.stop()

    return run
