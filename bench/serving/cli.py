"""The command line: every target at every concurrency for each model, then the tables and the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import bench.serving
from bench.serving.compute import machine, measure_compute
from bench.serving.inputs import build_torchscript, make_inputs, model_input_size
from bench.serving.report import aims, comparisons, dominates, finite_json, render, render_side_by_side, side_by_side
from bench.serving.run import Plan, run_cells
from bench.serving.servers import ROOT, running_servers
from emotorch.logs import configure_logging
from gateway.imaging import FER_MARGIN
from pipelines.model import MODELS
from pipelines.triton_config import PublishParams

logger = logging.getLogger("bench.serving")

TARGETS = ("baseline", "triton-http", "triton-grpc", "triton-grpc-nobatch", "gateway-face", "gateway-photo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description=bench.serving.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="small",
                        help=f"network(s) to build, untrained and seeded, comma-separated ({', '.join(MODELS)}); "
                        "several are measured one after the other in this run and compared side by side")  # fmt: skip
    parser.add_argument("--model-pt", type=Path, default=None, help="serve this exported TorchScript instead")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="publish section: Triton config")
    parser.add_argument("--max-foreign-cores", type=float, default=0.3,
                        help="run a cell again when other processes used more cores than this meanwhile")  # fmt: skip
    parser.add_argument("--retries", type=int, default=2, help="extra runs of a disturbed cell")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait for other processes to calm down before a rerun")  # fmt: skip
    parser.add_argument("--py-spy", type=Path, default=None,
                        help="py-spy binary: profile gateway and python backend in an extra run")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    configure_logging(timestamps=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the servers are stopped on the way out
    names = [n for n in args.model.split(",") if n]
    if unknown_models := sorted(set(names) - set(MODELS)):
        parser.error(f"unknown models {unknown_models}; known: {', '.join(MODELS)}")
    if args.model_pt is not None and len(names) > 1:
        parser.error("--model-pt serves one model: give one --model")
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    results = [bench_model(name, args, targets) for name in names]
    for result in results:
        print(render(result))  # noqa: T201 - a benchmark prints its table
    output: dict[str, Any] = results[0]
    if len(results) > 1:
        output = {"models": results, "side_by_side": side_by_side(results)}
        print(render_side_by_side(output["side_by_side"]))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(finite_json(output), indent=2, allow_nan=False) + "\n")
    return 0


def bench_model(model_name: str, args: argparse.Namespace, targets: list[str]) -> dict[str, Any]:
    """Every target at every concurrency for one network, then its compute efficiency; the result dict."""
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    params = PublishParams.from_yaml(args.params) if args.params.exists() else PublishParams()
    with tempfile.TemporaryDirectory(prefix="emotorch-bench-") as tmp:
        work = Path(tmp)
        model_pt = args.model_pt.resolve() if args.model_pt else build_torchscript(model_name, work / "model.pt")
        model = torch.jit.load(str(model_pt), map_location="cpu").eval()
        labels = list(model.labels)
        name = model_name if args.model_pt is None else model_pt.name
        size = model_input_size(model)
        inputs = make_inputs(size, FER_MARGIN)
        with torch.inference_mode():
            reference = model(torch.from_numpy(inputs.face))[0].numpy()
        logger.info("starting Triton, the gateway and the baseline for %s", name)
        with running_servers(work, model_pt, labels, params, size) as servers:
            plan = Plan(targets, concurrencies, args.warmup, args.duration, args.max_foreign_cores, args.retries,
                        args.quiet_wait, args.py_spy)  # fmt: skip
            cells, parity, profiles = asyncio.run(run_cells(servers, inputs, reference, plan, work))
        logger.info("measuring the model's FLOP/s against the fp32 peak (servers stopped)")
        flop_per_face, compute = measure_compute(
            model, params.max_batch_size, args.max_foreign_cores, args.retries, args.quiet_wait
        )
    info = machine()
    rows = comparisons(cells, concurrencies)
    result = {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flop_per_face": flop_per_face,
        "machine": info,
        "triton_version": servers.triton_version,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": concurrencies,
            "targets": targets,
            "max_foreign_cores": args.max_foreign_cores,
            "publish": asdict(params),
        },  # fmt: skip
        "parity_max_abs_diff": parity,
        "cells": [asdict(c) for c in cells],
        "comparisons": rows,
        "compute": compute,
        "aims": aims(name, rows),
        "dominates": dominates(cells, flop_per_face, compute, int(info["cores"] or 1)),
        "py_spy": profiles,
    }
    return result
