"""The tables: per-cell figures, gateway vs baseline ratios, the aims, what dominates, models side by side."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.serving.load import Cell


def _cell(cells: list[Cell], target: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if c.target == target and c.concurrency == concurrency), None)


def comparisons(cells: list[Cell], concurrencies: list[int]) -> list[dict[str, float | int | None]]:
    """The ratios the issue asks about, per concurrency (None where a target was not measured)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def figure(target: str, c: int, name: str) -> float | None:
        cell = _cell(cells, target, c)
        return None if cell is None else float(getattr(cell, name))

    rows: list[dict[str, float | int | None]] = []
    for c in concurrencies:
        face_p50, grpc_p50 = figure("gateway-face", c, "p50_ms"), figure("triton-grpc", c, "p50_ms")
        rows.append({
            "concurrency": c,
            "stack_vs_baseline_rps": ratio(figure("gateway-face", c, "throughput_rps"),
                                           figure("baseline", c, "throughput_rps")),
            "stack_vs_baseline_p99": ratio(figure("gateway-face", c, "p99_ms"), figure("baseline", c, "p99_ms")),
            "gateway_added_p50_ms": face_p50 - grpc_p50 if face_p50 is not None and grpc_p50 is not None else None,
            "batching_on_vs_off_rps": ratio(figure("triton-grpc", c, "throughput_rps"),
                                            figure("triton-grpc-nobatch", c, "throughput_rps")),
            "http_vs_grpc_rps": ratio(figure("triton-http", c, "throughput_rps"),
                                      figure("triton-grpc", c, "throughput_rps")),
        })  # fmt: skip
    return rows


def aims(model: str, rows: list[dict[str, float | int | None]]) -> dict[str, Any]:
    """The issue's aims: vgg_fer at top concurrency >= 1.5x baseline at no worse p99; small adds < 2 ms p50."""
    top, low = rows[-1], rows[0]
    rps, p99, added = top["stack_vs_baseline_rps"], top["stack_vs_baseline_p99"], low["gateway_added_p50_ms"]
    return {
        "stack_vs_baseline": {"applies": model == "vgg_fer", "concurrency": top["concurrency"], "rps_ratio": rps,
                              "p99_ratio": p99,
                              "met": rps is not None and p99 is not None and rps >= 1.5 and p99 <= 1.0},
        "gateway_overhead": {"applies": model == "small", "concurrency": low["concurrency"], "added_p50_ms": added,
                             "met": added is not None and added < 2.0},
    }  # fmt: skip


def dominates(cells: list[Cell], flop_per_face: int, compute: list[dict[str, float]], cores: int) -> list[str]:
    """Where the time and the CPU go, from the servers' own counters and /proc."""
    lines = []
    single = next((r for r in compute if r["threads"] == 1 and r["batch"] > 1), None)
    for cell in cells:
        if cell.target not in ("triton-grpc", "gateway-face", "gateway-photo") or not cell.requests:
            continue
        cpu = cell.server_cpu_ms | {"client": cell.client_cpu_ms}
        total = max(sum(cpu.values()), 1e-9)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        line = (f"- {cell.target} c={cell.concurrency}: mean {cell.mean_ms:.2f} ms; CPU ms/request {parts} "
                f"(total {total:.2f}: {cores} cores allow {1000 * cores / total:.0f} req/s, measured "
                f"{cell.throughput_rps:.0f})")  # fmt: skip
        if cell.triton:
            t = cell.triton
            line += (f"; Triton {t['request_ms']:.2f} ms/request = queue {t['queue_ms']:.2f} + compute "
                     f"{t['compute_input_ms'] + t['compute_infer_ms'] + t['compute_output_ms']:.2f}, "
                     f"mean batch {t['mean_batch']:.1f}")  # fmt: skip
        if cell.gateway:
            g = cell.gateway
            line += (
                f"; gateway in-app {g['in_app_ms']:.2f} ms (decode {g['decode_ms']:.2f}, detect "
                f"{g['detect_ms']:.2f}, preprocess {g['preprocess_ms']:.2f}, wait for Triton {g['infer_ms']:.2f})"
            )
        lines.append(line)
    if single:
        per_face_ms = 1000 * flop_per_face / (single["achieved_gflops"] * 1e9)
        lines.append(
            f"- pure model compute at batch {single['batch']:.0f} on 1 thread: {per_face_ms:.3f} ms CPU per "
            "face; compare with python_backend CPU ms/request above (the rest is Python and Triton overhead)"
        )
    return lines


def _f(x: float | int | None, spec: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def render(result: dict[str, Any]) -> str:
    """The markdown report printed by the benchmark."""
    m, s = result["machine"], result["settings"]
    cells = [Cell(**c) for c in result["cells"]]
    lines = [
        f"### Serving benchmark: `{result['model']}` ({result['flop_per_face'] / 1e6:.1f} MFLOP/face, "
        f"{result['parameters'] / 1e6:.2f} M parameters)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), Python "
        f"{m['python']}, Triton {result['triton_version']} (python backend, "
        f"{s['publish']['instance_count']} instances x "
        f"{s['publish']['torch_threads']} torch thread, dynamic batching {s['publish']['max_queue_delay_us']} us, "
        f"max batch {s['publish']['max_batch_size']}). Load generator on the same cores; closed loop, "
        f"{s['duration_s']:g} s per cell after {s['warmup_s']:g} s warm-up.",
        "",
        "| target | c | req/s | p50 ms | p99 ms | errors | client CPU ms/req | server CPU ms/req | Triton batch | "
        "other load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        batch = _f(c.triton["mean_batch"], ".1f") if c.triton else "-"
        mark = f" ({c.attempts} runs)" if c.attempts > 1 else ""
        lines.append(
            f"| {c.target} | {c.concurrency} | {c.throughput_rps:.1f} | {_f(c.p50_ms)} | {_f(c.p99_ms)} | {c.errors} | "
            f"{c.client_cpu_ms:.2f} | {sum(c.server_cpu_ms.values()):.2f} | {batch} | {c.foreign_cores:.2f}{mark} |"
        )
    lines += ["", "| c | stack / baseline req/s | stack / baseline p99 | gateway adds p50 (ms) | "
              "batching on / off req/s | HTTP / gRPC req/s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["comparisons"]:
        lines.append(
            f"| {r['concurrency']} | {_f(r['stack_vs_baseline_rps'])}x | {_f(r['stack_vs_baseline_p99'])}x | "
            f"{_f(r['gateway_added_p50_ms'])} | {_f(r['batching_on_vs_off_rps'])}x | {_f(r['http_vs_grpc_rps'])}x |"
        )
    lines += [
        "",
        "| torch threads | batch | ms / batch | faces/s | achieved GFLOP/s | fp32 peak GFLOP/s (sgemm, conv) | "
        "of peak | other load (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["compute"]:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['ms_per_batch']:.2f} | {r['faces_per_s']:.0f} | "
            f"{r['achieved_gflops']:.1f} | {r['peak_gflops']:.0f} ({r['sgemm_gflops']:.0f}, "
            f"{r['conv_gemm_gflops']:.0f}) | {100 * r['fraction_of_peak']:.0f} % | "
            f"{r['foreign_cores']:.2f} |"
        )
    disturbed = [f"{c.target} c={c.concurrency} ({c.foreign_cores:.2f})" for c in cells
                 if c.foreign_cores > s["max_foreign_cores"]]  # fmt: skip
    if disturbed:
        lines += ["", f"Still disturbed after reruns (other processes' cores): {', '.join(disturbed)}."]
    a = result["aims"]
    sb, go = a["stack_vs_baseline"], a["gateway_overhead"]
    lines += [
        "",
        f"Stack = gateway-face (gateway + Triton) vs the in-process baseline, same face PNG. Aim (vgg_fer): at "
        f"c={sb['concurrency']} >= 1.5x the baseline's req/s at no worse p99: {_f(sb['rps_ratio'])}x req/s, "
        f"{_f(sb['p99_ratio'])}x p99 -> {'met' if sb['met'] else 'not met'}"
        f"{'' if sb['applies'] else ' (the aim is for vgg_fer)'}.",
        f"Aim (small): the gateway adds < 2 ms p50 over Triton gRPC direct at c={go['concurrency']}: "
        f"{_f(go['added_p50_ms'])} ms -> {'met' if go['met'] else 'not met'}"
        f"{'' if go['applies'] else ' (the aim is for small)'}.",
        "",
        "What dominates (CPU per request from /proc, times from Triton's and the gateway's metrics):",
        *result["dominates"],
    ]
    for name, prof in result["py_spy"].items():
        libraries = ", ".join(f"{lib} {100 * share:.0f} %" for lib, share in prof["libraries"])
        functions = "; ".join(f"{frame} {100 * share:.0f} %" for frame, share in prof["functions"])
        what = "GIL held" if name == "gateway" else "busy"
        lines.append(f"- py-spy, {name} during gateway-face c={max(s['concurrency'])}: {what} "
                     f"{100 * prof['busy_share']:.0f} % of the time; own time by library: {libraries}; "
                     f"top functions: {functions}")  # fmt: skip
    return "\n".join(lines)


def side_by_side(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gateway's rows of every model next to the first model's, at each concurrency (one run)."""
    first = {(c["target"], c["concurrency"]): c for c in results[0]["cells"]}
    rows = []
    for result in results[1:]:
        for cell in result["cells"]:
            key = (cell["target"], cell["concurrency"])
            if cell["target"].startswith("gateway") and key in first:
                base = first[key]
                rows.append({"target": key[0], "concurrency": key[1], "model": result["model"],
                             "baseline_model": results[0]["model"], "p50_ms": cell["p50_ms"],
                             "baseline_p50_ms": base["p50_ms"], "p50_ratio": cell["p50_ms"] / base["p50_ms"],
                             "rps": cell["throughput_rps"], "baseline_rps": base["throughput_rps"]})  # fmt: skip
    return rows


def render_side_by_side(rows: list[dict[str, Any]]) -> str:
    lines = ["", "## Side by side (one run)", "",
             "| target | c | model | p50 ms | baseline model | p50 ms | p50 ratio | req/s | req/s |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['target']} | {r['concurrency']} | {r['model']} | {r['p50_ms']:.2f} | "
                     f"{r['baseline_model']} | {r['baseline_p50_ms']:.2f} | {r['p50_ratio']:.2f} | {r['rps']:.1f} | "
                     f"{r['baseline_rps']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def finite_json(value: Any) -> Any:
    """NaN (a cell without a single answer) as JSON null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value
