"""The gateway's routes, one router per concern; gateway/app.py includes them all.

health (liveness, readiness, Prometheus), demo (the demo page), emotions (POST /v1/emotions), model
(GET /v1/model), recommendations (recommendations, feedback, session erasure), admin (bearer-token routes).
Each router adds HEAD beside its GETs (load balancers and uptime monitors probe with it).
"""
