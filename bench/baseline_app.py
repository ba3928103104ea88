"""The serving bench's in-process baseline: what a user might build instead of Triton and the gateway.

A plain FastAPI app served by one uvicorn worker. It loads the same TorchScript `model.pt` once and, per
request, decodes the uploaded face, resizes it to the model's input size and runs the model in the request
handler with torch's default intra-op threads (all cores). The handler is `async` and runs the model inline:
the common pattern, and on one worker the faster one (a threadpool handler would run several batch-1 models at
once, each with its own intra-op threads, on the same cores).

    EMOTORCH_BENCH_MODEL_PT=model.pt python -m uvicorn bench.baseline_app:create_app --factory --port 9000
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, UploadFile

MODEL_PT_ENV = "EMOTORCH_BENCH_MODEL_PT"


def create_app(model_pt: Path | None = None) -> FastAPI:
    """The baseline app serving `model_pt` (default: the path in $EMOTORCH_BENCH_MODEL_PT)."""
    path = model_pt or Path(os.environ[MODEL_PT_ENV])
    model = torch.jit.load(str(path), map_location="cpu").eval()
    labels: list[str] = list(model.labels)
    side = int(getattr(model, "input_size", 48))  # TorchScript files exported before 2026-11 read 48x48
    with torch.inference_mode():  # the first calls pay for TorchScript's profiling runs
        for _ in range(2):
            model(torch.zeros((1, 1, side, side), dtype=torch.uint8))
    app = FastAPI(title="EmoTorch in-process baseline")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(image: Annotated[UploadFile, File()]) -> dict[str, object]:
        data = await image.read()
        gray = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise HTTPException(status_code=400, detail="not an image")
        if gray.shape != (side, side):
            gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
        with torch.inference_mode():
            probabilities = model(torch.from_numpy(gray)[None, None])[0].tolist()
        best = int(np.argmax(probabilities))
        return {"emotion": labels[best], "probabilities": dict(zip(labels, probabilities, strict=True))}

    return app
