"""Grafana dashboards as code: `python monitoring/grafana/dashboards.py` rewrites the JSON files beside it.

Every query refers to metric names defined in gateway/metrics.py or recording rules in monitoring/rules/;
the integration test runs each one against a real Prometheus and fails if any returns no data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("dashboards")
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def panel(title: str, queries: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries") -> dict[str, Any]:
    """One panel; queries are (PromQL, legend) pairs."""
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}
    return {
        "uid": uid,
        "title": title,
        "tags": ["emotorch"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": panels,
    }


def service_overview() -> dict[str, Any]:
    return dashboard("emotorch-service", "EmoTorch: service overview", [
        panel("Traffic by route and outcome", [("sum by (route, outcome) (emotorch:requests:rate5m)",
                                                "{{route}} {{outcome}}")], "reqps"),
        panel("Latency p50 / p99 by route", [
            ("emotorch:request_latency_seconds:p50_5m", "p50 {{route}}"),
            ("emotorch:request_latency_seconds:p99_5m", "p99 {{route}}"),
        ], "s"),
        panel("Server error ratio", [("emotorch:request_errors:ratio_rate5m", "5xx share")], "percentunit"),
        panel("Latency SLO: share of image requests over 0.5 s", [
            ("emotorch:slo_slow_requests:ratio_rate5m", "5m"),
            ("emotorch:slo_slow_requests:ratio_rate1h", "1h"),
        ], "percentunit"),
        panel("Time per stage (mean)", [("emotorch:stage_seconds:mean_rate5m", "{{stage}}")], "s"),
        panel("Triton queue and compute time per request", [
            ("emotorch:triton_queue_seconds:mean_rate5m", "queue"),
            ("emotorch:triton_compute_seconds:mean_rate5m", "compute"),
        ], "s"),
        panel("Triton average batch size", [("emotorch:triton_batch_size:mean_rate5m", "faces per execution")]),
        panel("Model ready (per gateway)", [("emotorch_model_ready", "{{instance}}")], kind="stat"),
    ])  # fmt: skip


def model() -> dict[str, Any]:
    return dashboard("emotorch-model", "EmoTorch: model and drift", [
        panel("Predicted class mix vs reference", [
            ("emotorch:prediction_share:ratio_10m", "served {{emotion}}"),
            ("emotorch:reference_share:ratio", "reference {{emotion}}"),
        ], "percentunit"),
        panel("Prediction drift (PSI, Jensen-Shannon)", [
            ("emotorch:prediction_psi:10m", "PSI"),
            ("emotorch:prediction_js_divergence:10m", "Jensen-Shannon"),
        ]),
        panel("Predictions in the drift window", [("emotorch:predictions:count_10m", "predictions (10m)")]),
        panel("Mean confidence shift vs reference", [("emotorch:prediction_confidence:mean_shift_10m", "shift")]),
        panel("Confidence distribution", [
            ("sum by (le) (rate(emotorch_prediction_confidence_bucket[5m]))", "{{le}}"),
        ], kind="heatmap"),
        panel("Input shift: face brightness and contrast vs training", [
            ("emotorch:face_brightness:mean_shift_10m", "brightness"),
            ("emotorch:face_contrast:mean_shift_10m", "contrast"),
        ]),
        panel("Images without a face", [("emotorch:images_without_face:ratio_rate5m", "no-face share")], "percentunit"),
        panel("Faces answered 'uncertain' (abstentions)", [("emotorch:abstentions:ratio_rate5m", "uncertain share")],
              "percentunit"),
        panel("Served model version", [("emotorch_model_info", "{{version}}")], kind="stat"),
    ])  # fmt: skip


def recommendations() -> dict[str, Any]:
    clicks = 'sum by ({by}) (rate(emotorch_feedback_events_total{{event=~"click|like|purchase"}}[15m]))'
    shown = "sum by ({by}) (rate(emotorch_recommended_items_total[15m]))"
    ctr = "{clicks} / {shown}"
    by_domain = ctr.format(clicks=clicks.format(by="domain"), shown=shown.format(by="domain"))
    by_emotion = ctr.format(clicks=clicks.format(by="emotion"), shown=shown.format(by="emotion"))
    return dashboard("emotorch-recommendations", "EmoTorch: recommendations", [
        panel("Click-through by domain", [(by_domain, "{{domain}}")], "percentunit"),
        panel("Click-through by emotion", [(by_emotion, "{{emotion}}")], "percentunit"),
        panel("Feedback events by type", [("sum by (event) (rate(emotorch_feedback_events_total[5m]))", "{{event}}")],
              "ops"),
        panel("Items recommended by domain", [("sum by (domain) (rate(emotorch_recommended_items_total[5m]))",
                                               "{{domain}}")], "ops"),
    ])  # fmt: skip


DASHBOARDS = {"service.json": service_overview, "model.json": model, "recommendations.json": recommendations}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def queries() -> list[str]:
    """Every PromQL expression of every dashboard."""
    return [t["expr"] for build in DASHBOARDS.values() for p in build()["panels"] for t in p["targets"]]


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    sys.exit(0)
