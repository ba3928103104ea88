"""The gateway's lifespan: what the app opens on start-up, shares with the routes, and closes on the way out.

On start: the Triton adapter, the catalog (a bad one stops start-up, naming the row), the feedback store and
its learned state (built in the background), the retention task; then it waits for the model with a deadline
(the gateway still starts if the model is late: /readyz says so and predictions answer 503). The state it
yields is what `gateway.state.get_state` hands to every route.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway.abuse import ClientBudget
from gateway.catalog import load_catalog
from gateway.detection import FaceDetector
from gateway.feedback import FeedbackStore
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.state import CatalogHolder
from gateway.triton import TritonClassifier

logger = logging.getLogger(__name__)

RETENTION_INTERVAL_S = 3600.0  # how often old feedback is deleted
LEARNED_STATE_WAIT_S = 5.0  # start-up waits this long for the learned state's first build, then serves anyway

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]


def make_lifespan(
    settings: Settings, metrics: GatewayMetrics, detector: FaceDetector, triton: TritonClassifier | None
) -> Lifespan:
    """The app's lifespan; `triton` replaces the adapter built from the settings (tests)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = triton or TritonClassifier(
            settings.triton_url, settings.model_name, settings.triton_timeout_s, settings.retry_after_s
        )
        catalog = CatalogHolder(load_catalog(settings.catalog_path))
        store = FeedbackStore(settings.database_url, half_life_days=settings.learning_half_life_days,
                              learner=settings.learner)  # fmt: skip
        # The learned state builds in the background; a large log keeps ranking from the catalog until it is in.
        await run_in_threadpool(store.start, catalog.current, LEARNED_STATE_WAIT_S)
        retention = asyncio.create_task(enforce_retention(store, settings.feedback_retention_days))
        await client.wait_until_ready(settings.model_wait_s)
        try:
            budget = ClientBudget(settings.counted_per_client_hour)
            yield {"settings": settings, "triton": client, "detector": detector, "metrics": metrics,
                   "catalog": catalog, "store": store, "budget": budget}  # fmt: skip
        finally:
            retention.cancel()
            await client.close()
            store.close()

    return lifespan


async def enforce_retention(store: FeedbackStore, retention_days: float) -> None:
    """Delete feedback older than the retention period, now and then every RETENTION_INTERVAL_S (off the loop)."""
    while True:
        purged = await run_in_threadpool(store.purge, retention_days * 86400.0)
        if purged:
            logger.info("deleted %d recommendations older than %g days", purged, retention_days)
        await asyncio.sleep(RETENTION_INTERVAL_S)
