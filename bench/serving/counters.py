"""The servers' own counters, scraped from their Prometheus endpoints before and after a cell."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus endpoint's samples, keyed by (name, sorted labels); counters named without `_total`."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser appends `_total` to counter samples; Triton's counters are exposed without it.
            name = sample.name.removesuffix("_total") if family.type == "counter" else sample.name
            samples[(name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


_TRITON_COUNTERS = ("request_success", "request_failure", "count", "exec_count", "request_duration_us",
                    "queue_duration_us", "compute_input_duration_us", "compute_infer_duration_us",
                    "compute_output_duration_us")  # fmt: skip


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, x) in ls for k, x in labels.items()))


def triton_delta(before: Samples, after: Samples, model: str) -> dict[str, float]:
    """Triton's per-request averages over a cell: server time split into queue and compute, mean batch size."""
    d = {c: _sum(after, f"nv_inference_{c}", model=model) - _sum(before, f"nv_inference_{c}", model=model)
         for c in _TRITON_COUNTERS}  # fmt: skip
    requests = max(d["request_success"], 1.0)
    per_request_ms = {f"{c.removesuffix('_duration_us')}_ms": d[c] / requests / 1000
                      for c in _TRITON_COUNTERS if c.endswith("_us")}  # fmt: skip
    return {"requests": d["request_success"], "failures": d["request_failure"],
            "mean_batch": d["count"] / max(d["exec_count"], 1.0), **per_request_ms}  # fmt: skip


def gateway_delta(before: Samples, after: Samples) -> dict[str, float]:
    """The gateway's own timings per request over a cell: in-app time of /v1/emotions and each stage."""

    def mean_ms(histogram: str, **labels: str) -> float:
        count = _sum(after, f"{histogram}_count", **labels) - _sum(before, f"{histogram}_count", **labels)
        total = _sum(after, f"{histogram}_sum", **labels) - _sum(before, f"{histogram}_sum", **labels)
        return 1000 * total / max(count, 1.0)

    out = {"in_app_ms": mean_ms("emotorch_request_duration_seconds", route="/v1/emotions")}
    for stage in ("decode", "detect", "preprocess", "infer"):
        out[f"{stage}_ms"] = mean_ms("emotorch_stage_duration_seconds", stage=stage)
    return out
