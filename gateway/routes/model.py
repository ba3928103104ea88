"""GET /v1/model: the served version's description, metrics, abstention policy, card and lineage."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.analysis import abstain_threshold
from gateway.routes import add_head_routes
from gateway.schemas import AbstentionPolicy, ModelDescription
from gateway.state import StateDep

router = APIRouter(tags=["model"])


@router.get(
    "/v1/model",
    response_model=ModelDescription,
    responses={503: {"description": "the model is not available (Retry-After says when to retry)"}},
)
async def model_description(state: StateDep) -> ModelDescription:
    """The served model version: labels, test metrics, abstention threshold and its model card."""
    info = await state["triton"].model_info()
    threshold, source = abstain_threshold(info, state["settings"].abstain_threshold)
    evaluation = dict(info.metadata.get("evaluation") or {})
    return ModelDescription(
        name=info.name,
        version=info.version,
        labels=list(info.labels),
        synthetic_training_data=info.metadata.get("synthetic_training_data"),
        weights=info.metadata.get("weights"),
        input=info.metadata.get("input"),
        metrics={k: v for k, v in evaluation.items() if k != "abstention"},
        abstention=AbstentionPolicy(threshold=threshold, source=source, validation=evaluation.get("abstention")),
        card=info.card or "No model card is available for this version.",
        card_data=info.metadata.get("card"),
        lineage=_lineage(info.metadata),
    )


add_head_routes(router)


def _lineage(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The served version's provenance, flattened from its published metadata (None before 2026-12 exports)."""
    keys = ("registry_version", "run_id", "checkpoint_sha256")
    found = {k: metadata[k] for k in keys if k in metadata} | dict(metadata.get("lineage") or {})
    return found or None
