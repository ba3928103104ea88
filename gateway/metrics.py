"""Prometheus metrics of the gateway: names and labels are defined here once; monitoring/ refers to them.

Every metric lives in the app's own CollectorRegistry (tests build fresh apps side by side). Labels come
from small fixed sets (route template, outcome, stage, emotion): never a user, session or image identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
STAGES = ("decode", "detect", "preprocess", "infer")


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    request_duration: Histogram
    stage_duration: Histogram
    predictions: Counter
    confidence: Histogram
    faces_per_image: Histogram
    images_without_face: Counter
    model: Info
    model_ready: Gauge
    feedback_events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            request_duration=Histogram(
                "emotorch_request_duration_seconds", "HTTP request duration by route template and outcome.",
                ["route", "method", "outcome"], buckets=LATENCY_BUCKETS_S, registry=registry,
            ),
            stage_duration=Histogram(
                "emotorch_stage_duration_seconds", "Time spent per processing stage of an image request.",
                ["stage"], buckets=STAGE_BUCKETS_S, registry=registry,
            ),
            predictions=Counter(
                "emotorch_predictions_total", "Faces classified, by predicted emotion.", ["emotion"],
                registry=registry,
            ),
            confidence=Histogram(
                "emotorch_prediction_confidence", "Probability of the predicted emotion per face.",
                buckets=CONFIDENCE_BUCKETS, registry=registry,
            ),
            faces_per_image=Histogram(
                "emotorch_faces_per_image", "Faces found per analysed image.", buckets=(0, 1, 2, 3, 5, 10),
                registry=registry,
            ),
            images_without_face=Counter(
                "emotorch_images_without_face_total", "Analysed images in which no face was found.",
                registry=registry,
            ),
            model=Info("emotorch_model", "The model version the gateway last saw serving.", registry=registry),
            model_ready=Gauge(
                "emotorch_model_ready", "1 when Triton reports the model ready at the last check.", registry=registry
            ),
            feedback_events=Counter(
                "emotorch_feedback_events_total", "Feedback events recorded, by event type and item domain.",
                ["event", "domain"], registry=registry,
            ),
        )  # fmt: skip


def outcome(status: int) -> str:
    """A small fixed label set: success, client_error, server_error."""
    if status < 400:
        return "success"
    return "client_error" if status < 500 else "server_error"
