# syntax=docker/dockerfile:1
# The EmoTorch gateway: FastAPI + OpenCV face detection + tritonclient. No torch, no pipelines.
# Build from the repository root (compose does) after `dvc repro detector` (MTCNN's ONNX networks in models/detector):
#   docker build -f deploy/gateway.Dockerfile -t emotorch/gateway:0.1.0 .
# The build context is limited to what is copied below by deploy/gateway.Dockerfile.dockerignore.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    EMOTORCH_DETECTOR_DIR=/app/models/detector

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it (deploy/k8s/base/gateway.yaml uses it).
RUN groupadd --system --gid 10001 emotorch \
    && useradd --system --uid 10001 --gid emotorch --home-dir /app --no-create-home --shell /usr/sbin/nologin emotorch

WORKDIR /app
COPY deploy/requirements-gateway.txt /tmp/requirements-gateway.txt
RUN pip install --no-cache-dir -r /tmp/requirements-gateway.txt && rm /tmp/requirements-gateway.txt

# emotorch/ holds the `emotorch gateway` entry point (uvicorn, malloc arena cap); gateway/ the service and catalog.
COPY emotorch/ /app/emotorch/
COPY gateway/ /app/gateway/
# The face detector's networks: a DVC output (the `detector` stage), not in git.
COPY models/detector/ /app/models/detector/

USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["python", "-m", "emotorch.cli", "gateway", "--host", "0.0.0.0", "--port", "8080"]
