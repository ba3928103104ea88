# syntax=docker/dockerfile:1
# MLflow tracking server + model registry with its PostgreSQL driver and the S3 client for the artifact store.
# The official MLflow image ships neither psycopg2 nor boto3, hence this small image. Same MLflow as the pipeline.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.8 \
    && groupadd --system --gid 10002 mlflow \
    && useradd --system --uid 10002 --gid mlflow --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow

USER 10002:10002
WORKDIR /home/mlflow
EXPOSE 5000

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2)"]

# Backend store and artifact destination come from MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION.
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
