"""Routes of the recommendation loop: recommend for an image or a known emotion, then take feedback."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from gateway.analysis import Mode, analyse
from gateway.catalog import ILLUSTRATIVE
from gateway.clientip import client_key
from gateway.errors import BadInputError, NotFoundError, UnprocessableError, UnsupportedMediaTypeError
from gateway.feedback import ItemNotRecommendedError, Shown, UnknownRecommendationError
from gateway.privacy import SESSION_ID_PATTERN, new_session_id, session_digest
from gateway.recommendation import Ranked, align, is_unclear, rank
from gateway.routes import add_head_routes
from gateway.schemas import (
    UNCERTAIN,
    CatalogDescription,
    DomainDescription,
    EmotionEstimate,
    FaceResult,
    FeedbackRecorded,
    FeedbackRequest,
    ModelRef,
    RecommendationQuery,
    RecommendationsResponse,
    RecommendedItem,
)
from gateway.state import State, StateDep, require_consent, require_single_parts
from gateway.vocabulary import DOMAIN_TITLES, DOMAINS

router = APIRouter(tags=["recommendations"])


_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["image", "consent"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP photo"},
        "consent": {"type": "string", "enum": ["true"], "description": "exactly 'true' (lower case, no spaces)"},
        "mode": {
            "type": "string",
            "enum": ["photo", "face", "closeup"],
            "default": "photo",
            "description": "photo: find the faces; face: the image is a face crop, read whole unchecked; closeup: "
            "a close-up of one face, read whole once the detector has seen a face in it (422 otherwise)",
        },
        "domains": {"type": "array", "items": {"type": "string", "enum": list(DOMAINS)}},
        "k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        "session_id": {
            "type": "string",
            "pattern": SESSION_ID_PATTERN,
            "description": "the session_id of an earlier answer (omitted: a new session)",
        },  # fmt: skip
    },
}


@router.post(
    "/v1/recommendations",
    response_model=RecommendationsResponse,
    responses={
        400: {"description": "malformed body or image"},
        404: {"description": "no face in the image"},
        413: {"description": "the body or the image is over the size limit"},
        415: {"description": "neither JSON nor multipart, or an image format that is not accepted"},
        422: {"description": "invalid fields or consent, or no face in a close-up (mode=closeup)"},
        429: {"description": "too many requests from this client; see Retry-After"},
        503: {"description": "model unavailable"},
        504: {"description": "the inference server did not answer in time"},
    },  # fmt: skip
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": RecommendationQuery.model_json_schema()},
                "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            },
        }
    },
)
async def recommendations(request: Request, state: StateDep) -> RecommendationsResponse:
    """Ranked items per domain for the emotion in a photo (multipart) or a given emotion (JSON)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    model: ModelRef | None = None
    face: FaceResult | None = None
    faces: list[FaceResult] = []
    if content_type == "multipart/form-data":
        query, faces, model = await _from_image(request, state)
        face = faces[0]  # the largest
        probabilities = face.probabilities  # the whole vector drives the ranking, confident or not
        source = "image"
    elif content_type == "application/json":
        query = _parse_json(await request.body())
        probabilities = _from_query(query, state)
        source = "probabilities" if query.probabilities is not None else "emotion"
    else:
        raise UnsupportedMediaTypeError("send application/json (an emotion) or multipart/form-data (an image)")
    catalog = state["catalog"]
    try:
        vector = align(probabilities, catalog.labels)
    except ValueError as e:
        raise UnprocessableError(str(e)) from e
    posterior = await run_in_threadpool(state["store"].posterior, catalog)
    seed = state["settings"].recommendation_seed
    uncertain = (face is not None and face.uncertain) or is_unclear(vector)
    ranked = rank(catalog, vector, posterior, list(dict.fromkeys(query.domains)), query.k,
                  np.random.default_rng(seed), uncertain=uncertain)  # fmt: skip
    normalised = {label: float(p) for label, p in zip(catalog.labels, vector, strict=True)}
    shown = [Shown(r.item.id, domain, position, r.propensity)
             for domain, rows in ranked.items() for position, r in enumerate(rows)]  # fmt: skip
    session_id = await run_in_threadpool(_session_for, query.session_id, state)
    version = model.version if model else None
    client = _client(request)
    recommendation_id = await run_in_threadpool(state["store"].save_recommendation, normalised, shown,
                                                session_digest(session_id), version,
                                                lambda: state["budget"].allow(client))  # fmt: skip
    mood = catalog.labels[int(np.argmax(vector))]
    for domain, rows in ranked.items():
        state["metrics"].recommended_items.labels(domain=domain, emotion=mood).inc(len(rows))
    return RecommendationsResponse(
        recommendation_id=recommendation_id,
        session_id=session_id,
        emotion=EmotionEstimate(
            label=UNCERTAIN if uncertain else mood, uncertain=uncertain, probabilities=normalised, source=source
        ),  # fmt: skip
        domains={domain: [_item(r) for r in rows] for domain, rows in ranked.items()},
        model=model,
        face=face,
        faces=faces,
    )


def _item(r: Ranked) -> RecommendedItem:
    return RecommendedItem(item_id=r.item.id, title=r.item.title, category=r.item.category, tags=list(r.item.tags),
                           score=round(r.score, 4), reason=r.reason, source=r.item.source,
                           illustrative=r.item.source == ILLUSTRATIVE)  # fmt: skip


def _client(request: Request) -> str:
    """The bounded client key the rate limit uses (the address ClientAddress parsed)."""
    return client_key(str(request.client.host if request.client else "unknown"))


def _session_for(given: str | None, state: State) -> str:
    """The session a recommendation joins: the given one if the store knows it, else a freshly issued one.

    Only ids the server issued exist in the store, so a client can neither pick nor claim an id; an erased or
    expired session simply starts over, and the answer carries the id to keep.
    """
    if given is not None and state["store"].has_session(session_digest(given)):
        return given
    return new_session_id()


def _parse_json(body: bytes) -> RecommendationQuery:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(f"the body is not valid JSON: {e}") from e
    except (RecursionError, ValueError) as e:  # nesting too deep, an integer of thousands of digits
        raise BadInputError(f"the JSON body is too deeply nested or holds too large a number: {e}") from e
    try:
        query = RecommendationQuery.model_validate(payload)
    except ValidationError as e:
        raise UnprocessableError(f"invalid field(s): {_field_errors(e)}") from e
    if (query.emotion is None) == (query.probabilities is None):
        raise UnprocessableError("give exactly one of 'emotion' or 'probabilities'")
    return query


def _from_query(query: RecommendationQuery, state: State) -> dict[str, float]:
    labels = state["catalog"].labels
    if query.emotion is not None:
        if query.emotion not in labels:
            raise UnprocessableError(f"unknown emotion {query.emotion!r}; known: {', '.join(labels)}")
        return {query.emotion: 1.0}
    return dict(query.probabilities or {})


def _field_errors(error: ValidationError) -> str:
    """Each offending field and what is wrong with it, never the submitted value."""
    errors = error.errors()
    named = "; ".join(f"{'.'.join(str(p) for p in e['loc'])[:100] or 'body'}: {e['msg']}" for e in errors[:10])
    return named + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")


async def _from_image(request: Request, state: State) -> tuple[RecommendationQuery, list[FaceResult], ModelRef]:
    form = await request.form()
    require_single_parts(form, ("image", "consent", "mode", "k", "session_id"))
    image = form.get("image")
    require_consent(form.get("consent"))
    if not isinstance(image, UploadFile):
        raise UnprocessableError("the form field 'image' (a file) is required")
    domains = [d.strip() for value in form.getlist("domains") for d in str(value).split(",") if d.strip()]
    fields: dict[str, Any] = {"emotion": "neutral"}  # placeholder, replaced by the image's estimate
    if domains:
        fields["domains"] = domains
    for name in ("k", "session_id"):
        if form.get(name) is not None:
            fields[name] = form.get(name)
    try:
        query = RecommendationQuery.model_validate(fields)
    except ValidationError as e:
        raise UnprocessableError(f"invalid form field(s): {_field_errors(e)}") from e
    try:
        mode = Mode(str(form.get("mode", "photo")))
    except ValueError as e:
        raise UnprocessableError("invalid form field mode: it must be 'photo', 'face' or 'closeup'") from e
    data = await image.read()
    await image.close()
    settings = state["settings"]
    result = await analyse(data, mode, state["detector"], state["triton"], state["metrics"], settings.max_image_pixels,
                           settings.abstain_threshold, align=settings.align_faces)  # fmt: skip
    if not result.boxes:
        raise NotFoundError("no face was found in the image; send a clearer photo or use mode=face")
    return query, result.faces(), ModelRef(name=result.model.name, version=result.model.version)


@router.post(
    "/v1/feedback",
    response_model=FeedbackRecorded,
    status_code=201,
    responses={
        200: {"model": FeedbackRecorded, "description": "this very event was already stored (stored once)"},
        400: {"description": "the body is not decodable JSON"},
        404: {"description": "no such recommendation in this session"},
        413: {"description": "the body is over the size limit"},
        422: {"description": "invalid event or item"},
        429: {"description": "too many requests from this client; see Retry-After"},
    },
)
async def feedback(body: FeedbackRequest, state: StateDep, request: Request, response: Response) -> FeedbackRecorded:
    """Record what happened to a recommended item (impression, click, like, dismiss, purchase).

    It needs the session_id the recommendation came with: a recommendation of another session is not found.
    """
    digest = session_digest(body.session_id)
    try:
        client = _client(request)
        recorded = await run_in_threadpool(state["store"].record, body.recommendation_id, body.item_id, body.event,
                                           digest, lambda: state["budget"].allow(client))  # fmt: skip
    except UnknownRecommendationError as e:
        raise NotFoundError(f"no recommendation {body.recommendation_id!r} in this session") from e
    except ItemNotRecommendedError as e:
        raise UnprocessableError(
            f"item {body.item_id!r} was not part of recommendation {body.recommendation_id!r}"
        ) from e
    if recorded.duplicate:
        response.status_code = 200
        return FeedbackRecorded(recorded=False, event_id=recorded.event_id, counted=False)
    domain = _domain_of(body.item_id, state)
    state["metrics"].feedback_events.labels(event=body.event, domain=domain, emotion=recorded.emotion).inc()
    return FeedbackRecorded(recorded=True, event_id=recorded.event_id, counted=recorded.counted)


def _domain_of(item_id: str, state: State) -> str:
    row = state["catalog"].index.get(item_id)
    return state["catalog"].items[row].domain if row is not None else "unknown"


@router.delete(
    "/v1/sessions/{session_id}",
    status_code=204,
    tags=["privacy"],
    responses={
        422: {"description": "the session id is malformed (not one the server could have issued)"},
        429: {"description": "too many requests from this client; see Retry-After"},
    },
)
async def erase_session(
    session_id: Annotated[
        str, Path(pattern=SESSION_ID_PATTERN, description="the session_id a recommendation answer carried")
    ],
    state: StateDep,
) -> Response:
    """Delete every recommendation and feedback event of a session (idempotent).

    The session id is the capability: only its holder can name it. The answer is the same 204 whether the
    session held anything or not, so it tells a guesser nothing. Learned rankings are rebuilt without it.
    """
    await run_in_threadpool(state["store"].delete_session, session_digest(session_id))
    return Response(status_code=204)


@router.get("/v1/catalog", response_model=CatalogDescription)
async def catalog_description(state: StateDep) -> CatalogDescription:
    """The recommendation domains, how people call them, and what the catalog in use holds in each."""
    catalog = state["catalog"]
    domains = []
    for domain in DOMAINS:
        sources = Counter(catalog.items[row].source for row in catalog.in_domain(domain))
        domains.append(DomainDescription(name=domain, title=DOMAIN_TITLES[domain], items=sum(sources.values()),
                                         sources=dict(sorted(sources.items()))))  # fmt: skip
    return CatalogDescription(domains=domains)


add_head_routes(router)
