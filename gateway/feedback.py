"""The feedback store: what was shown (logged at serve time), what people did about it, and the evidence log.

SQLite file by default (WAL mode, so readers never block the writer), any SQLAlchemy URL in production
(PostgreSQL). Tables in gateway/feedback_schema.py. No image and no personal data beyond the digest of a
server-issued session id; emotion vectors are stored coarsened and a repeated event is stored once
(gateway/privacy.py says why).

How outcomes count (one per item shown): the server logs every item it returns as an impression and counts
it at once as a miss weighted by how likely the person was to look at its position (`examination`: 1 at the
top of a domain's list, 0.63 second, 0.39 fifth). A click, like or purchase turns it into a success; a dismissal
(or an `impression` the client confirms) into a full miss. Caps (gateway/abuse.py) decide which count.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.abuse import SESSION_COUNTED_RECOMMENDATIONS
from gateway.catalog import Catalog
from gateway.erasure import delete_where
from gateway.feedback_schema import create_schema, events, evidence, recommendations, sqlite_pragmas
from gateway.feedback_schema import recommended_items as shown
from gateway.learned_state import LearnedState
from gateway.learner import Posterior
from gateway.linear_learner import DEFAULT_LEARNER
from gateway.privacy import coarsen
from gateway.vocabulary import EVENTS
from gateway.votes import ItemNotRecommendedError, UnknownRecommendationError, count_vote, examination

__all__ = ["EVENTS", "FeedbackStore", "ItemNotRecommendedError", "Recorded", "Shown", "UnknownRecommendationError"]


@dataclass(frozen=True)
class Shown:
    item_id: str
    domain: str
    position: int  # within the domain's list
    propensity: float


@dataclass(frozen=True)
class Recorded:
    event_id: int
    emotion: str  # the top emotion of the recommendation the event answers
    duplicate: bool = False  # the same event on the same item was already stored
    counted: bool = False  # it reached the learned state (caps, see gateway/abuse.py)


def always() -> bool:
    return True


class FeedbackStore:
    """Synchronous store (call it from a worker thread in async code)."""

    def __init__(self, url: str, stats_ttl_s: float = 1.0, half_life_days: float | None = 30.0,
                 shared: bool = True, learner: str = DEFAULT_LEARNER) -> None:  # fmt: skip
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", sqlite_pragmas)
        create_schema(self.engine)
        half_life_s = half_life_days * 86400.0 if half_life_days else None
        self.learned = LearnedState(self.engine, half_life_s, stats_ttl_s, shared, learner)
        self._started = threading.Lock()

    def start(self, catalog: Catalog, wait_s: float = 5.0) -> None:
        """Build the learned state (in the background; wait up to `wait_s` for it)."""
        self.learned.start(catalog, wait_s)

    def close(self) -> None:
        self.learned.stop()
        self.engine.dispose()

    def posterior(self, catalog: Catalog) -> Posterior:
        """What feedback has taught, as the ranking's posterior (starts the learned state on first use)."""
        with self._started:
            if self.learned._thread is None:
                self.learned.start(catalog, wait_s=5.0)
        return self.learned.posterior(catalog)

    def save_recommendation(self, probabilities: dict[str, float], items: Sequence[Shown], session_digest: str,
                            model_version: str | None, client_allows: Callable[[], bool] = always) -> str:  # fmt: skip
        """Log what was recommended (every item an impression) under a session; return the recommendation's id."""
        recommendation_id, now = str(uuid.uuid4()), time.time()
        stored = json.dumps(coarsen(probabilities))
        with self.engine.begin() as conn:
            mine = (recommendations.c.session_id == session_digest) & recommendations.c.counted.is_(True)
            earlier = conn.execute(select(func.count()).select_from(recommendations).where(mine)).scalar_one()
            counted = int(earlier) < SESSION_COUNTED_RECOMMENDATIONS and client_allows()
            conn.execute(insert(recommendations).values(id=recommendation_id, created_at=now, counted=counted,
                                                        session_id=session_digest, probabilities=stored,
                                                        model_version=model_version))  # fmt: skip
            if items:
                rows = [{"recommendation_id": recommendation_id, "item_id": s.item_id, "domain": s.domain,
                         "position": s.position, "propensity": s.propensity, "outcome": "shown", "vote_counted": False,
                         "miss_weight": examination(s.position) if counted else 0.0} for s in items]  # fmt: skip
                conn.execute(insert(shown), rows)
                if counted:
                    conn.execute(insert(evidence), [{"recommendation_id": recommendation_id, "item_id": r["item_id"],
                                                     "served_at": now, "probabilities": stored, "successes": 0.0,
                                                     "failures": r["miss_weight"]} for r in rows])  # fmt: skip
        if counted and items:
            self.learned.touched()
        return recommendation_id

    def has_session(self, session_digest: str) -> bool:
        """Whether anything is stored under the session (an erased or expired session is unknown)."""
        with self.engine.connect() as conn:
            query = select(recommendations.c.id).where(recommendations.c.session_id == session_digest).limit(1)
            return conn.execute(query).first() is not None

    def record(self, recommendation_id: str, item_id: str, event_name: str, session_digest: str,
               client_allows: Callable[[], bool] = always) -> Recorded:  # fmt: skip
        """Store one feedback event (once: a replay returns the stored one); it is durable when this returns.

        A recommendation of another session is unknown here, exactly as one that does not exist.
        """
        if event_name not in EVENTS:
            raise ValueError(f"unknown event {event_name!r}; known: {', '.join(EVENTS)}")
        top = "unknown"
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(recommendations.c.probabilities, recommendations.c.session_id,
                                            recommendations.c.created_at)
                                     .where(recommendations.c.id == recommendation_id)).first()  # fmt: skip
                if found is None or not hmac.compare_digest(str(found[1] or ""), session_digest):
                    raise UnknownRecommendationError(recommendation_id)
                probabilities: dict[str, float] = json.loads(found[0])
                top = max(probabilities, key=lambda label: probabilities[label]) if probabilities else "unknown"
                if (stored := _stored_event(conn, recommendation_id, item_id, event_name)) is not None:
                    return Recorded(stored, top, duplicate=True)
                counted = count_vote(conn, recommendation_id, item_id, event_name, session_digest, found,
                                     client_allows)  # fmt: skip
                result = conn.execute(insert(events).values(recommendation_id=recommendation_id, item_id=item_id,
                                                            event=event_name, created_at=time.time(),
                                                            counted=counted))  # fmt: skip
        except IntegrityError:  # the same event, committed by a concurrent request in between
            with self.engine.connect() as conn:
                return Recorded(_stored_event(conn, recommendation_id, item_id, event_name) or 0, top, duplicate=True)
        if counted:
            self.learned.touched()
        key = result.inserted_primary_key
        assert key is not None
        return Recorded(int(key[0]), top, counted=counted)

    def purge(self, older_than_s: float, batch: int = 5, pause_s: float = 0.05) -> int:
        """Delete recommendations older than `older_than_s` (their items, events, evidence), in short batches:
        five recommendations per transaction hold the write lock for a few milliseconds, so the requests' own
        writes (every served item is logged) never wait long behind a purge; the purge itself takes longer."""
        cutoff = time.time() - older_than_s
        removed, _ = delete_where(self.engine, recommendations.c.created_at < cutoff, batch, pause_s)
        if removed:
            self.learned.touched()
        return removed

    def delete_session(self, session_digest: str) -> tuple[int, int]:
        """Erase everything stored under a session; return (recommendations, events) deleted."""
        removed = delete_where(self.engine, recommendations.c.session_id == session_digest, 500, 0.0)
        if removed[0]:
            self.learned.touched()
        return removed

    def session_counts(self, session_digest: str) -> tuple[int, int]:
        """(recommendations, events) stored under a session."""
        with self.engine.connect() as conn:
            ids = select(recommendations.c.id).where(recommendations.c.session_id == session_digest)
            n_recs = conn.execute(select(func.count()).select_from(ids.subquery())).scalar_one()
            n_events = conn.execute(
                select(func.count()).select_from(events).where(events.c.recommendation_id.in_(ids))
            ).scalar_one()
        return int(n_recs), int(n_events)

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def _stored_event(conn: Any, recommendation_id: str, item_id: str, event_name: str) -> int | None:
    query = select(events.c.id).where((events.c.recommendation_id == recommendation_id)
                                      & (events.c.item_id == item_id) & (events.c.event == event_name))  # fmt: skip
    found = conn.execute(query.limit(1)).first()
    return int(found[0]) if found is not None else None
