"""The product's fixed vocabularies, each defined once: recommendation domains and feedback events.

The API schemas (gateway/schemas.py), catalog validation (gateway/catalog.py), the vote counting
(gateway/votes.py), the OpenAPI form schema and the demo page (through GET /v1/catalog) all derive from here:
adding a domain is a line here plus its items in the catalog.
"""

from __future__ import annotations

from typing import Literal, get_args

Domain = Literal["products", "places", "food", "songs", "movies"]
DOMAINS: tuple[Domain, ...] = get_args(Domain)
DOMAIN_TITLES: dict[Domain, str] = {
    "products": "Products",
    "places": "Places to visit",
    "food": "Food",
    "songs": "Songs",
    "movies": "Movies",
}

FeedbackEvent = Literal["impression", "click", "like", "dismiss", "purchase"]
EVENTS: tuple[FeedbackEvent, ...] = get_args(FeedbackEvent)
SUCCESS_EVENTS: tuple[FeedbackEvent, ...] = ("click", "like", "purchase")  # the rest: seen, or dismissed
