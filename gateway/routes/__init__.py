"""The gateway's routes, one router per concern; gateway/app.py includes them all.

health (liveness, readiness, Prometheus), demo (the demo page), emotions (POST /v1/emotions), model
(GET /v1/model), recommendations (recommendations, feedback, session erasure), admin (bearer-token routes).
Each router module ends with `add_head_routes(router)`: HEAD beside every GET, derived from the routes.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute


def add_head_routes(router: APIRouter) -> None:
    """HEAD wherever GET answers (load balancers and uptime monitors probe with it), kept out of the OpenAPI
    document; call it once, after the router's last route."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            path = route.path.removeprefix(router.prefix)
            router.add_api_route(path, route.endpoint, methods=["HEAD"], include_in_schema=False)
