"""Request and response bodies of the public API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FaceResult(BaseModel):
    box: tuple[int, int, int, int] = Field(description="x, y, width, height in pixels of the upright image")
    emotion: str = Field(description="most probable label")
    confidence: float = Field(ge=0, le=1, description="probability of `emotion`")
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
