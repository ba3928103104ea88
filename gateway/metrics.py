"""Prometheus metrics of the gateway: names and labels are defined here once; monitoring/ refers to them.

Every metric lives in the app's own CollectorRegistry (tests build fresh apps side by side). Labels come
from small fixed sets (route template, outcome, stage, emotion): never a user, session or image identifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONFIDENCE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
UNIT_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
CONTRAST_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


# Every metric once: (field, kind, name, help, labels, histogram buckets).
_SPECS: tuple[tuple[str, type, str, str, tuple[str, ...], tuple[float, ...] | None], ...] = (
    ("request_duration", Histogram, "emotorch_request_duration_seconds",
     "HTTP request duration by route template and outcome.", ("route", "method", "outcome"), LATENCY_BUCKETS_S),
    ("stage_duration", Histogram, "emotorch_stage_duration_seconds",
     "Time spent per processing stage of an image request.", ("stage",), STAGE_BUCKETS_S),
    ("predictions", Counter, "emotorch_predictions_total",
     "Faces classified, by most likely emotion, also when the answer was 'uncertain': the class mix that drift "
     "compares with the model's reference.", ("emotion",), None),
    ("answers", Counter, "emotorch_answers_total",
     "Faces answered, by the answer the client got: an emotion or 'uncertain'.", ("answer",), None),
    ("confidence", Histogram, "emotorch_prediction_confidence", "Probability of the predicted emotion per face.",
     (), CONFIDENCE_BUCKETS),
    ("faces_per_image", Histogram, "emotorch_faces_per_image", "Faces found per analysed image.", (),
     (0, 1, 2, 3, 5, 10)),
    ("images_without_face", Counter, "emotorch_images_without_face_total",
     "Analysed images in which no face was found.", (), None),
    ("abstentions", Counter, "emotorch_abstentions_total",
     "Faces answered 'uncertain': confidence below the abstention threshold.", (), None),
    ("model", Info, "emotorch_model", "The model version the gateway last saw serving.", (), None),
    ("model_ready", Gauge, "emotorch_model_ready", "1 when Triton reports the model ready at the last check.", (),
     None),
    ("feedback_events", Counter, "emotorch_feedback_events_total",
     "Feedback events recorded, by event type, item domain and the recommendation's top emotion.",
     ("event", "domain", "emotion"), None),
    ("recommended_items", Counter, "emotorch_recommended_items_total",
     "Items recommended, by domain and top emotion (CTR denominator).", ("domain", "emotion"), None),
    ("shed_requests", Counter, "emotorch_shed_requests_total",
     "Requests refused at admission before any work: busy (the process is full), client_busy.", ("reason",), None),
    ("face_brightness", Histogram, "emotorch_face_brightness",
     "Mean pixel value of each classified face crop, 0..1 (input drift).", (), UNIT_BUCKETS),
    ("face_contrast", Histogram, "emotorch_face_contrast",
     "Pixel standard deviation of each classified face crop, 0..1.", (), CONTRAST_BUCKETS),
    ("reference_class_ratio", Gauge, "emotorch_reference_class_ratio",
     "Share of each emotion in the served model's predictions on held-out data (drift reference).", ("emotion",),
     None),
    ("reference_mean_confidence", Gauge, "emotorch_reference_mean_confidence",
     "Mean confidence of the served model on held-out data.", (), None),
    ("reference_brightness", Gauge, "emotorch_reference_face_brightness",
     "Mean pixel value of the training faces, 0..1.", (), None),
    ("reference_contrast", Gauge, "emotorch_reference_face_contrast",
     "Mean per-face pixel standard deviation of the validation faces, 0..1.", (), None),
)  # fmt: skip


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    request_duration: Histogram
    stage_duration: Histogram
    predictions: Counter
    answers: Counter
    confidence: Histogram
    faces_per_image: Histogram
    images_without_face: Counter
    abstentions: Counter
    model: Info
    model_ready: Gauge
    feedback_events: Counter
    recommended_items: Counter
    shed_requests: Counter
    face_brightness: Histogram
    face_contrast: Histogram
    reference_class_ratio: Gauge
    reference_mean_confidence: Gauge
    reference_brightness: Gauge
    reference_contrast: Gauge
    _observed: list[Any] = field(default_factory=list, repr=False, compare=False)  # the model last observed

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        registry = registry or CollectorRegistry()
        made: dict[str, Any] = {}
        for attribute, kind, name, documentation, labels, buckets in _SPECS:
            extra = {"buckets": buckets} if buckets is not None else {}
            made[attribute] = kind(name, documentation, list(labels), registry=registry, **extra)
        return cls(registry=registry, **made)

    def observe_model(self, name: str, version: str, labels: tuple[str, ...], metadata: dict[str, Any]) -> None:
        """Publish the served model's identity and its drift reference (from its published metadata).

        Called on every analysis: it does its work only when the model description changed (a new version, or
        the same one re-read), not once per request.
        """
        key = (name, version, labels)
        if self._observed and self._observed[0] == key and self._observed[1] is metadata:
            return
        self._observed[:] = [key, metadata]  # holding the dict keeps its identity from being reused
        self.model.info({"name": name, "version": version})
        for emotion in labels:  # every class has a series from the start: a class that vanishes shows as 0
            self.predictions.labels(emotion=emotion)
            self.answers.labels(answer=emotion)
        self.answers.labels(answer="uncertain")
        # A version without a reference (none published, or the config describes another version) must not
        # keep the previous version's: drift against it would be drift against the wrong model. NaN compares
        # false, so no drift alert fires on it.
        reference = metadata.get("reference") or {}
        self.reference_class_ratio.clear()
        for emotion, ratio in (reference.get("class_distribution") or {}).items():
            self.reference_class_ratio.labels(emotion=emotion).set(float(ratio))
        self.reference_mean_confidence.set(float(reference.get("mean_confidence", math.nan)))
        pixels = metadata.get("input_reference") or {}
        self.reference_brightness.set(float(pixels.get("brightness", math.nan)))
        self.reference_contrast.set(float(pixels.get("contrast", math.nan)))


def outcome(status: int) -> str:
    """A small fixed label set: success, client_error, server_error."""
    if status < 400:
        return "success"
    return "client_error" if status < 500 else "server_error"
