"""Request and response bodies of the public API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.privacy import SESSION_ID_PATTERN
from gateway.vocabulary import DOMAINS, Domain, FeedbackEvent

UNCERTAIN = "uncertain"
MAX_PROBABILITY_KEYS = 32  # the labels of any model fit; more is an attack on the error message, not a query


class FaceResult(BaseModel):
    box: tuple[int, int, int, int] = Field(description="x, y, width, height in pixels of the upright image")
    emotion: str = Field(description="most probable label, or 'uncertain' when confidence is below the threshold")
    uncertain: bool = Field(False, description="true when the model abstains: read `probabilities` instead")
    most_likely: str = Field(description="most probable label, even when uncertain")
    confidence: float = Field(ge=0, le=1, description="probability of `most_likely`")
    probabilities: dict[str, float] = Field(description="probability by label, in the model's label order")
    landmarks: list[tuple[float, float]] | None = Field(
        None, description="x, y of the left eye, right eye, nose, left and right mouth corner in the upright image "
        "(MTCNN; null with the Haar detector, mode=face or mode=closeup); the face was turned level on its eyes "
        "before the crop"
    )


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




class RecommendationQuery(BaseModel):
    """Recommendations for a known emotion (a label, or a probability vector over the labels)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"emotion": "sad", "domains": ["songs", "food"], "k": 3},
                                           {"probabilities": {"happy": 0.6, "surprise": 0.3, "neutral": 0.1}}]},
    }  # fmt: skip

    emotion: str | None = Field(None, max_length=32, description="one label, e.g. 'happy'")
    probabilities: dict[str, float] | None = Field(
        None, max_length=MAX_PROBABILITY_KEYS, description="probability by label (renormalised)"
    )
    domains: list[Domain] = Field(default_factory=lambda: list(DOMAINS), min_length=1, max_length=len(DOMAINS))
    k: int = Field(5, ge=1, le=20, description="items per domain")
    session_id: str | None = Field(
        None,
        pattern=SESSION_ID_PATTERN,
        description="the session_id of an earlier answer, to add to that session; omitted (or erased, expired): "
        "the answer starts a new session",
    )


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    category: str
    tags: list[str]
    score: float = Field(description="sampled expected click-through under the emotion distribution")
    reason: str = Field(description="the emotion(s) that carry the score; says when the face was unclear")
    source: str = Field(description="where the catalog row comes from (a package and version, or 'illustrative')")
    illustrative: bool = Field(description="true: an invented example item, not a real product, place or song")


class EmotionEstimate(BaseModel):
    label: str = Field(description="most probable emotion, or 'uncertain' for a low-confidence face")
    uncertain: bool = Field(False, description="the ranking used the probability vector, not a top label")
    probabilities: dict[str, float]
    source: Literal["image", "probabilities", "emotion"]


class DomainDescription(BaseModel):
    name: Domain
    title: str = Field(description="how the domain is named to people (the demo page's heading)")
    items: int = Field(description="items in the catalog in use")
    sources: dict[str, int] = Field(description="items by source: 'illustrative' items are invented examples")


class CatalogDescription(BaseModel):
    domains: list[DomainDescription]


class RecommendationsResponse(BaseModel):
    recommendation_id: str = Field(description="send it back with feedback on an item")
    session_id: str = Field(
        description="server-issued capability (256 random bits): keep it secret; it is needed to send feedback on "
        "this recommendation and to erase the session (DELETE /v1/sessions/{session_id})"
    )
    emotion: EmotionEstimate
    domains: dict[str, list[RecommendedItem]]
    model: ModelRef | None = Field(None, description="the model that read the image, if one was sent")
    face: FaceResult | None = Field(None, description="the face the emotion was read from (the largest), for an image")
    faces: list[FaceResult] = Field(
        default_factory=list,
        description="every face found in the image, largest first (`face` is the first); to recommend for another "
        "one, send its `probabilities` as JSON with this session_id",
    )


class FeedbackRequest(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"examples": [{"recommendation_id": "0b7e2f9c-3d4f-4a8e-9d1e-6f1c2a3b4c5d",
                                           "item_id": "song-calm-acoustic-03", "event": "like",
                                           "session_id": "Xq3vY0c2l9oJm4b8TtW1sZ7dK5eR6aN0pH2uF8gC3iL"}]},
    }  # fmt: skip

    recommendation_id: str = Field(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")
    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session_id the recommendation came with")
    item_id: str = Field(min_length=1, max_length=80)
    event: FeedbackEvent


class FeedbackRecorded(BaseModel):
    recorded: bool = Field(description="false when this very event was already stored: it is stored once")
    event_id: int
    counted: bool = Field(
        description="whether it changed what is learned for everyone: one vote per item per session, at most 10 "
        "per session and 60 an hour per client; later ones are stored (and erasable) but not counted"
    )


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
