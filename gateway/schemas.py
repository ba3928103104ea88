"""Request and response bodies of the public API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

UNCERTAIN = "uncertain"
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"  # an opaque id chosen by the client (not "." or "..")


class FaceResult(BaseModel):
    box: tuple[int, int, int, int] = Field(description="x, y, width, height in pixels of the upright image")
    emotion: str = Field(description="most probable label, or 'uncertain' when confidence is below the threshold")
    uncertain: bool = Field(False, description="true when the model abstains: read `probabilities` instead")
    most_likely: str = Field(description="most probable label, even when uncertain")
    confidence: float = Field(ge=0, le=1, description="probability of `most_likely`")
    probabilities: dict[str, float] = Field(description="probability by label, in the model's label order")


class ModelRef(BaseModel):
    name: str
    version: str


class EmotionsResponse(BaseModel):
    faces: list[FaceResult]
    model: ModelRef
    timings_ms: dict[str, float] = Field(description="milliseconds spent per stage")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "faces": [
                        {
                            "box": [174, 65, 99, 99],
                            "emotion": "happy",
                            "uncertain": False,
                            "most_likely": "happy",
                            "confidence": 0.91,
                            "probabilities": {
                                "angry": 0.01,
                                "disgust": 0.0,
                                "fear": 0.01,
                                "happy": 0.91,
                                "neutral": 0.05,
                                "sad": 0.01,
                                "surprise": 0.01,
                            },
                        }
                    ],
                    "model": {"name": "emotion", "version": "1"},
                    "timings_ms": {"decode": 3.1, "detect": 21.0, "preprocess": 0.2, "infer": 4.3},
                }
            ]
        }
    }


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model: ModelRef | None = None


Domain = Literal["products", "places", "food", "songs", "movies"]
ALL_DOMAINS: list[Domain] = ["products", "places", "food", "songs", "movies"]
FeedbackEvent = Literal["impression", "click", "like", "dismiss", "purchase"]


class RecommendationQuery(BaseModel):
    """Recommendations for a known emotion (a label, or a probability vector over the labels)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"emotion": "sad", "domains": ["songs", "food"], "k": 3},
                                           {"probabilities": {"happy": 0.6, "surprise": 0.3, "neutral": 0.1}}]},
    }  # fmt: skip

    emotion: str | None = Field(None, max_length=32, description="one label, e.g. 'happy'")
    probabilities: dict[str, float] | None = Field(None, description="probability by label (renormalised)")
    domains: list[Domain] = Field(default_factory=lambda: list(ALL_DOMAINS), min_length=1, max_length=5)
    k: int = Field(5, ge=1, le=20, description="items per domain")
    session_id: str | None = Field(
        None, max_length=64, pattern=SESSION_ID_PATTERN, description="opaque id; DELETE /v1/sessions/{id} erases it"
    )


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    category: str
    tags: list[str]
    score: float = Field(description="sampled expected click-through under the emotion distribution")
    reason: str


class EmotionEstimate(BaseModel):
    label: str = Field(description="most probable emotion, or 'uncertain' for a low-confidence face")
    uncertain: bool = Field(False, description="the ranking used the probability vector, not a top label")
    probabilities: dict[str, float]
    source: Literal["image", "probabilities", "emotion"]


class RecommendationsResponse(BaseModel):
    recommendation_id: str = Field(description="send it back with feedback on an item")
    emotion: EmotionEstimate
    domains: dict[str, list[RecommendedItem]]
    model: ModelRef | None = Field(None, description="the model that read the image, if one was sent")
    face: FaceResult | None = Field(None, description="the face the emotion was read from (the largest), for an image")


class FeedbackRequest(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"recommendation_id": "0b7e2f9c-3d4f-4a8e-9d1e-6f1c2a3b4c5d",
                                           "item_id": "song-calm-acoustic-03", "event": "like"}]},
    }  # fmt: skip

    recommendation_id: str = Field(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")
    item_id: str = Field(min_length=1, max_length=80)
    event: FeedbackEvent


class FeedbackRecorded(BaseModel):
    recorded: bool
    event_id: int


class SessionErased(BaseModel):
    session_id: str
    recommendations_deleted: int = Field(description="recommendations served under the session id, now deleted")
    events_deleted: int = Field(description="feedback events on them, now deleted")


class AbstentionPolicy(BaseModel):
    threshold: float = Field(description="faces below this confidence are answered 'uncertain'")
    source: Literal["model", "setting", "none"] = Field(
        description="model: chosen on validation data by the pipeline; setting: EMOTORCH_ABSTAIN_THRESHOLD"
    )
    validation: dict[str, Any] | None = Field(None, description="how the pipeline chose it (target precision...)")


class ModelDescription(BaseModel):
    name: str
    version: str
    labels: list[str]
    synthetic_training_data: bool | None = Field(description="true: trained on the embedded synthetic faces only")
    weights: dict[str, Any] | None = Field(
        None, description="where the weights come from: scratch, or a pretrained file (package, version, sha256, "
        "paper, the authors' reported figure, measured agreement with the original model)"
    )
    input: dict[str, Any] | None = Field(None, description="the face crop the model reads: shape and crop margin")
    metrics: dict[str, Any] = Field(description="evaluation of this version (test split; real-photo checks)")
    abstention: AbstentionPolicy
    card: str = Field(description="the version's model card (Markdown), generated by the pipeline")
    card_data: dict[str, Any] | None = Field(None, description="the same card as structured data")
    lineage: dict[str, Any] | None = Field(
        None, description="where this version comes from: MLflow registry version and run, the checkpoint's sha256, "
        "the git commit, the dvc.lock sha256 and the data fingerprint it was published from"
    )
