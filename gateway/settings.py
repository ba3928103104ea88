"""Gateway settings: one pydantic-settings class, read from `EMOTORCH_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.catalog import DEFAULT_CATALOG
from gateway.clientip import parse_networks


class Settings(BaseSettings):
    """Every knob of the gateway; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="EMOTORCH_", extra="forbid", frozen=True)

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address (host:port)")
    model_name: str = Field("emotion", description="model name in the Triton repository")
    triton_timeout_s: float = Field(5.0, gt=0, description="deadline of one inference call")
    model_wait_s: float = Field(30.0, ge=0, description="how long start-up waits for the model to be ready")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 answers")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest accepted request body")
    body_timeout_s: float = Field(30.0, gt=0, description="time a client has to send the whole request body")
    max_image_pixels: int = Field(40_000_000, gt=0, description="largest accepted width x height")
    database_url: str = Field("sqlite:///emotorch-feedback.db", description="feedback store (SQLAlchemy URL)")
    catalog_path: Path = Field(DEFAULT_CATALOG, description="recommendation catalog CSV")
    recommendation_seed: int | None = Field(None, description="fixed seed: deterministic rankings (tests)")
    learning_half_life_days: float | None = Field(
        30.0, gt=0, description="feedback's weight in learning halves every this many days (null: no decay)"
    )
    learner: Literal["beta", "linear"] = Field(
        "linear", description="what learns from feedback: 'linear' (emotion x item features plus item quality, "
        "gateway/linear_learner.py; more likes in 11 of the offline bench's 15 worlds, its gate passed in all) or "
        "'beta' (per item and emotion under a per-category level, gateway/learner.py; its gate passed in all, "
        "one vote's reach a third of linear's)"
    )
    counted_per_client_hour: int = Field(
        60, ge=0, description="feedback events and recommendations per client an hour that count toward learning"
    )
    feedback_retention_days: float = Field(365.0, gt=0, description="feedback older than this is deleted")
    rate_limit_per_s: float = Field(20.0, ge=0, description="requests per second per client on /v1/ (0: off)")
    rate_limit_burst: int = Field(40, ge=1, description="requests a client may burst above the rate")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (JSON list)")
    abstain_threshold: float | None = Field(
        None, ge=0, le=1, description="confidence below which a face is 'uncertain' (unset: the model's own)"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of proxies whose X-Forwarded-For is believed (JSON list; empty: none)",
    )
    max_in_flight: int = Field(64, ge=1, description="requests under /v1/ in analysis at once per process")
    max_images_in_flight: int = Field(8, ge=1, description="image requests in analysis at once per process")
    max_images_per_client: int = Field(4, ge=1, description="image requests in analysis at once per client")
    max_headers: int = Field(100, ge=8, description="most request headers accepted (more: 431)")
    max_head_bytes: int = Field(16384, ge=1024, description="largest request line + headers in bytes (more: 431)")
    head_timeout_s: float = Field(10.0, gt=0, description="time a client has to send the request head (then 408)")
    keep_alive_s: int = Field(5, ge=1, description="an idle kept-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="open connections per process (more: 503)")
    detector: Literal["mtcnn", "haar"] = Field(
        "mtcnn", description="face detector: MTCNN (landmarks, alignment) or OpenCV's Haar cascade"
    )
    detector_dir: Path = Field(Path("models/detector"), description="the exported MTCNN networks (dvc repro detector)")
    min_face_fraction: float = Field(
        0.1, gt=0, le=1, description="smallest face MTCNN looks for, as a fraction of the image's longer side "
        "(selfies and webcam frames hold large faces; 0.05 also finds faces half that size at about twice the cost)"
    )
    align_faces: bool = Field(True, description="turn faces upright on their eye landmarks before the FER crop")
    admin_token: SecretStr | None = Field(None, description="bearer token of the admin routes (unset: disabled)")

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo must stop start-up, not silently trust nobody (or everybody)
        return value
