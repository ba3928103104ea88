"""Triton python-backend model: serves the exported TorchScript `model.pt` of its version folder.

Publish copies this file into every version folder as `model.py` (Triton needs it there; at model level the
load hangs). It runs inside Triton's python stub, so it imports only torch, numpy and Triton's utilities.
The local Triton build has no libtorch backend; the NGC image can serve `model.pt` with it instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One instance per Triton model instance; `execute` receives the requests of one dynamic batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # One thread per instance: instances, not intra-op threads, spread load over the cores.
        torch.set_num_threads(int(params.get("torch_threads", "1")))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.model = torch.jit.load(os.path.join(version_dir, "model.pt"), map_location="cpu").eval()
        labels = list(self.model.labels)
        with open(os.path.join(version_dir, "labels.txt"), encoding="utf-8") as f:
            published = [line.strip() for line in f if line.strip()]
        if labels != published:
            raise pb_utils.TritonModelException(f"model.pt labels {labels} != labels.txt {published}")
        # Warm up once so that the first request does not pay for TorchScript's profiling runs.
        (image_input,) = config["input"]
        (output,) = config["output"]
        self.input_name, self.output_name = image_input["name"], output["name"]  # the contract, from the config
        dims = [int(d) for d in image_input["dims"]]  # C, H, W of one face: the model's own input size
        with torch.inference_mode():
            for _ in range(2):
                self.model(torch.zeros((1, *dims), dtype=torch.uint8))

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            with torch.inference_mode():
                probabilities = self.model(torch.from_numpy(np.concatenate(arrays))).numpy()
        except Exception as e:  # noqa: BLE001 - any failure must become a per-request error, not a crash
            error = pb_utils.TritonError(f"inference failed: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for array in arrays:
            n = array.shape[0]
            output = pb_utils.Tensor(self.output_name, np.ascontiguousarray(probabilities[start : start + n]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            start += n
        return responses
