"""Per-app state shared by the routes (built in the lifespan), and request-level checks."""

from __future__ import annotations

from typing import Annotated, TypedDict

from fastapi import Depends, Request
from starlette.datastructures import FormData

from gateway.abuse import ClientBudget
from gateway.catalog import Catalog
from gateway.detection import FaceDetector
from gateway.errors import ConsentRequiredError, UnprocessableError
from gateway.feedback import FeedbackStore
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.triton import TritonClassifier


class State(TypedDict):
    settings: Settings
    triton: TritonClassifier
    detector: FaceDetector
    metrics: GatewayMetrics
    catalog: Catalog
    store: FeedbackStore
    budget: ClientBudget  # counted votes and impressions per client (gateway/abuse.py)


class CatalogHolder:
    """The catalog in use; admin reloads swap `current` (lifespan state is copied per request, this is not)."""

    def __init__(self, catalog: Catalog) -> None:
        self.current = catalog


def get_state(request: Request) -> State:
    return State(
        settings=request.state.settings,
        triton=request.state.triton,
        detector=request.state.detector,
        metrics=request.state.metrics,
        catalog=request.state.catalog.current,
        store=request.state.store,
        budget=request.state.budget,
    )


StateDep = Annotated[State, Depends(get_state)]


def require_consent(consent: object) -> None:
    """Refuse any image unless the request says consent=true, exactly as documented: not "True", " true",
    "yes" or "1". Consent is the one field not to guess at; the OpenAPI schema says enum ["true"]."""
    if consent != "true":
        raise ConsentRequiredError(
            "the form field 'consent' must be exactly 'true': images are analysed only with the person's consent"
        )


def require_single_parts(form: FormData, names: tuple[str, ...]) -> None:
    """Refuse a form that repeats a part: which of two images or two consents counts is not a guess to make."""
    for name in names:
        if (count := len(form.getlist(name))) > 1:
            raise UnprocessableError(f"the form field {name!r} appears {count} times; send it once")
