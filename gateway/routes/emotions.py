"""POST /v1/emotions: find the faces in an image and classify each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from gateway.analysis import Mode, analyse
from gateway.routes import add_head_routes
from gateway.schemas import EmotionsResponse, ModelRef
from gateway.state import StateDep, require_consent, require_single_parts

router = APIRouter(tags=["emotions"])

_ERROR_RESPONSES = {
    400: "the image is corrupt or otherwise unusable",
    413: "the upload or the image's pixel count is over the limit",
    415: "the file is not a JPEG, PNG or WebP image",
    422: "consent missing, a field is invalid, or no face in a close-up (mode=closeup)",
    429: "too many requests from this client, or its share of image slots is full; see Retry-After",
    503: "the model is not available, or the gateway is at capacity (Retry-After says when to retry)",
    504: "the model did not answer in time",
}


@router.post(
    "/v1/emotions",
    response_model=EmotionsResponse,
    responses={code: {"description": text} for code, text in _ERROR_RESPONSES.items()},
)
async def emotions(
    request: Request,
    state: StateDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo (or face crop with mode=face)")],
    consent: Annotated[
        str | None,
        Form(
            description="exactly 'true' (lower case, no spaces): the person consents to the analysis",
            examples=["true"],
            json_schema_extra={"enum": ["true"]},
        ),  # fmt: skip
    ] = None,
    mode: Annotated[
        Mode,
        Form(
            description="photo: find every face; face: the image is one face crop, read whole unchecked; "
            "closeup: a close-up of one face, read whole once the detector has seen a face in it (422 if not)"
        ),
    ] = Mode.photo,
) -> EmotionsResponse:
    """Find the faces in an image and classify the emotion of each (largest face first)."""
    require_single_parts(await request.form(), ("image", "consent", "mode"))
    require_consent(consent)
    data = await image.read()
    await image.close()
    settings = state["settings"]
    result = await analyse(data, mode, state["detector"], state["triton"], state["metrics"], settings.max_image_pixels,
                           settings.abstain_threshold, align=settings.align_faces)  # fmt: skip
    return EmotionsResponse(
        faces=result.faces(),
        model=ModelRef(name=result.model.name, version=result.model.version),
        timings_ms=result.timings_ms,
    )


add_head_routes(router)
