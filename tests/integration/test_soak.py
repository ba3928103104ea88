"""Soak: 5,000 mixed requests at concurrency 16 on loopback after 1,000 of warm-up; no error, bounded memory growth.

Sized for the test suite (about a minute); longer soaks are `bench/overload.py` and `bench/serving.py` territory."""

from __future__ import annotations

import io
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image
from skimage import data as skdata

from pipelines.synthetic import generate_faces
from tests.conftest import png_bytes
from tests.integration.conftest import RunningGateway, rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 5_000
WARM_UP = 1_000
CONCURRENCY = 16


def test_soak_mixed_traffic(gateway: RunningGateway) -> None:
    faces = [png_bytes(face) for _, face in generate_faces(32, seed=77)]
    buffer = io.BytesIO()
    Image.fromarray(skdata.astronaut()).resize((320, 320)).save(buffer, format="JPEG", quality=80)
    photo = buffer.getvalue()
    local = threading.local()
    recommendations: list[tuple[str, str, str]] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=gateway.url, timeout=60)
        return local.client  # type: ignore[no-any-return]

    def one(i: int) -> int:
        rng = random.Random(i)
        kind = rng.random()
        c = client()
        if kind < 0.45:
            return c.post("/v1/emotions", files={"image": ("f.png", faces[i % len(faces)])},
                          data={"consent": "true", "mode": "face"}).status_code  # fmt: skip
        if kind < 0.50:
            return c.post("/v1/emotions", files={"image": ("p.jpg", photo)}, data={"consent": "true"}).status_code
        if kind < 0.75:
            response = c.post("/v1/recommendations", json={"emotion": rng.choice(["happy", "sad", "angry"]), "k": 2,
                                                           "domains": ["songs", "food"]})  # fmt: skip
            if response.status_code == 200 and len(recommendations) < 1000:
                body = response.json()
                recommendations.append((body["recommendation_id"], body["domains"]["songs"][0]["item_id"],
                                        body["session_id"]))  # fmt: skip
            return response.status_code
        if kind < 0.90 and recommendations:
            rec_id, item, session = recommendations[rng.randrange(len(recommendations))]
            event = rng.choice(["impression", "click", "like", "dismiss", "purchase"])
            return c.post("/v1/feedback", json={"recommendation_id": rec_id, "item_id": item, "event": event,
                                                "session_id": session}).status_code  # fmt: skip
        return c.get(rng.choice(["/healthz", "/readyz", "/metrics"])).status_code

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(-WARM_UP, 0)))  # warm-up: caches, allocator arenas, pooled connections
        before = rss_kib(gateway.pid)
        started = time.monotonic()
        statuses, samples = [], []
        for chunk in range(0, REQUESTS, 1000):
            statuses += list(pool.map(one, range(chunk, chunk + 1000)))
            samples.append(rss_kib(gateway.pid))
        print("RSS samples", samples)  # noqa: T201
        seconds = time.monotonic() - started
        after = rss_kib(gateway.pid)
    errors = [s for s in statuses if s >= 400]
    print(  # noqa: T201
        f"soak: {REQUESTS} requests in {seconds:.0f} s ({REQUESTS / seconds:.0f}/s), {len(errors)} errors, "
        f"gateway RSS {before} -> {after} KiB ({(after - before) / before:+.1%})"
    )
    assert errors == [], {s: errors.count(s) for s in set(errors)}
    assert after < before * 1.10, (before, after)
