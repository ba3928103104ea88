"""A real Prometheus scraping a real gateway and Triton: drift rules, the drift alert, every dashboard query."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from emotorch import monitoring
from monitoring.grafana.dashboards import queries
from pipelines.labels import LABELS
from pipelines.synthetic import GeneratorConfig, generate_faces
from tests.conftest import free_port, png_bytes
from tests.integration.conftest import RunningTriton, spawn_gateway, stop_gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Stack:
    gateway: str
    prometheus: str

    def query(self, expr: str) -> list[dict]:  # type: ignore[type-arg]
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        response.raise_for_status()
        return list(response.json()["data"]["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert result, f"no data for {expr}"
        return float(result[0]["value"][1])

    def alert_states(self, name: str) -> set[str]:
        alerts = httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return {a["state"] for a in alerts if a["labels"]["alertname"] == name}

    def wait_for(self, check, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(triton: RunningTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A dedicated gateway (its own metrics) and a Prometheus scraping it and Triton every second."""
    work = tmp_path_factory.mktemp("monitoring")
    prometheus_port = free_port()
    gateway, url = spawn_gateway(triton.grpc_url, work, rate_limit_per_s="0")
    try:
        port = url.rsplit(":", 1)[1]
        targets = ([f"127.0.0.1:{port}"], [f"127.0.0.1:{triton.ports.metrics}"])
        config = monitoring.render_config(work, *targets, interval_s=1)
        prometheus = monitoring.start_prometheus(config, prometheus_port, work / "data", work / "prometheus.log")
        try:
            monitoring.wait_until_ready(prometheus, prometheus_port)
            yield Stack(url, f"http://127.0.0.1:{prometheus_port}")
        finally:
            monitoring.stop(prometheus)
    finally:
        stop_gateway(gateway)


def _post_faces(url: str, faces: list[np.ndarray]) -> None:
    def post(face: np.ndarray) -> int:
        return httpx.post(f"{url}/v1/emotions", files={"image": ("f.png", png_bytes(face))},
                          data={"consent": "true", "mode": "face"}, timeout=30).status_code  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(post, faces)) == {200}


def test_drift_rule_and_alert_follow_the_class_mix(stack: Stack) -> None:
    # Counters only count from Prometheus' first sample: wait until it has scraped the zero-initialised
    # prediction counters (the gateway creates one per label when it first sees the model).
    stack.wait_for(lambda: len(stack.query("emotorch_predictions_total")) == len(LABELS))
    time.sleep(2)
    # Phase 1: faces like the validation data the reference was computed on -> quiet.
    _post_faces(stack.gateway, [face for _, face in generate_faces(450, seed=31337)])
    stack.wait_for(lambda: stack.query("emotorch:predictions:count_10m >= 430") != [])
    quiet_psi = stack.value("emotorch:prediction_psi:10m")
    assert quiet_psi < 0.1, quiet_psi
    assert stack.value("emotorch:prediction_js_divergence:10m") < 0.05
    assert stack.alert_states("EmotorchPredictionDrift") == set()
    shares = 'emotorch:prediction_share:ratio_10m{emotion="%s"}'
    quiet_shares = {label: stack.value(shares % label) for label in LABELS}

    # Phase 2: only clearly happy faces -> the served mix shifts toward happy; PSI crosses 0.1 and the alert
    # goes pending (its `for` is 10 minutes: pending is what a short test can see).
    cfg = GeneratorConfig(min_intensity=0.9, max_intensity=1.0)
    happy = [
        f
        for _, f in generate_faces(900, seed=4242, cfg=cfg, class_weights=dict.fromkeys(LABELS, 0.0) | {"happy": 1.0})
    ]
    _post_faces(stack.gateway, happy)
    stack.wait_for(lambda: stack.query("emotorch:prediction_psi:10m > 0.1") != [])
    stack.wait_for(lambda: stack.alert_states("EmotorchPredictionDrift") & {"pending", "firing"} != set())
    assert stack.value("emotorch:prediction_psi:10m") > 0.1 > quiet_psi
    # The mix moved toward happy: its share rose by far the most (how far depends on the trained model's recall).
    rises = {label: stack.value(shares % label) - quiet_shares[label] for label in LABELS}
    assert max(rises, key=rises.__getitem__) == "happy" and rises["happy"] > 0.1, rises


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    from skimage import data as skdata

    client = httpx.Client(base_url=stack.gateway, timeout=30)
    astronaut = png_bytes(skdata.astronaut()[:, :, ::-1].copy())
    flat = png_bytes(np.full((120, 160), 128, np.uint8))
    for image in (astronaut, flat):
        assert (
            client.post("/v1/emotions", files={"image": ("p.png", image)}, data={"consent": "true"}).status_code == 200
        )
    for emotion in LABELS:
        rec = client.post("/v1/recommendations", json={"emotion": emotion, "k": 2}).json()
        for items in rec["domains"].values():
            event = {"recommendation_id": rec["recommendation_id"], "item_id": items[0]["item_id"], "event": "click",
                     "session_id": rec["session_id"]}  # fmt: skip
            assert client.post("/v1/feedback", json=event).status_code == 201
    client.close()
    expressions = queries()
    assert len(expressions) >= 20

    def all_have_data() -> bool:
        return all(stack.query(expr) for expr in expressions)

    try:
        stack.wait_for(all_have_data, timeout_s=30)
    except AssertionError:
        empty = [expr for expr in expressions if not stack.query(expr)]
        pytest.fail(f"dashboard queries without data: {empty}")
