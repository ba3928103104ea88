"""Loading a published version into a running Triton and checking that it serves what TorchScript computes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from emotorch import contract
from pipelines.triton_config import PublishParams


class PublishError(RuntimeError):
    """The new version could not be published or did not serve correctly; the previous one is untouched."""


def load_and_verify(
    triton_url: str,
    params: PublishParams,
    version: int,
    model_pt: Path,
    dims: list[int],
    timeout_s: float = 120.0,
) -> float:
    """Ask Triton to load the newest version, wait for it, and compare its outputs with TorchScript's."""
    import torch
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    client = triton_http.InferenceServerClient(triton_url, connection_timeout=timeout_s, network_timeout=timeout_s)
    try:
        client.load_model(params.model_name)
        deadline = time.monotonic() + timeout_s
        while not client.is_model_ready(params.model_name, str(version)):
            if time.monotonic() > deadline:
                raise PublishError(f"version {version} not ready in Triton after {timeout_s:.0f} s")
            time.sleep(0.2)
        samples = np.random.default_rng(version).integers(0, 256, size=(64, *dims), dtype=np.uint8)
        infer_input = triton_http.InferInput(contract.INPUT_NAME, list(samples.shape), contract.INPUT_WIRE_TYPE)
        infer_input.set_data_from_numpy(samples)
        result = client.infer(params.model_name, [infer_input], model_version=str(version))
        served = result.as_numpy(contract.OUTPUT_NAME)
    except InferenceServerException as e:
        raise PublishError(f"Triton at {triton_url} failed to load/serve version {version}: {e}") from e
    finally:
        client.close()
    with torch.no_grad():
        expected = torch.jit.load(str(model_pt), map_location="cpu")(torch.from_numpy(samples)).numpy()
    max_diff = float(np.abs(served - expected).max())
    if not max_diff <= 1e-5:
        raise PublishError(f"Triton's outputs for version {version} differ from TorchScript by {max_diff:.3g}")
    return max_diff
