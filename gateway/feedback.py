"""The feedback store: recommendations served and the events people sent about them, in SQL.

SQLite file by default (WAL mode, so readers never block the writer), any SQLAlchemy URL in production
(PostgreSQL). Only events are stored: which items were recommended for which emotion probabilities, and what
happened to them; never an image, and no personal data beyond the digest of a server-issued session id. Emotion
vectors are stored coarsened and a repeated event is stored once (gateway/privacy.py says why). The learned
state (`FeedbackStats`) is derived from these rows, so it survives restarts and every replica converges.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from gateway.catalog import Catalog
from gateway.privacy import coarsen
from gateway.recommendation import FeedbackStats

# A full rebuild of the learned state this often: on PostgreSQL several writers can commit ids out of order,
# so an event with a lower id than one already read may become visible later; the incremental refresh would
# miss it, the periodic rebuild picks it up.
FULL_REBUILD_S = 300.0
EVENTS = ("impression", "click", "like", "dismiss", "purchase")
SUCCESS_EVENTS = ("click", "like", "purchase")

metadata = MetaData()
recommendations = Table(
    "recommendations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", Float, nullable=False),
    # SHA-256 of the server-issued session id (never the id: a copy of the database grants no session).
    # Rows written before ids were server-issued hold a client-chosen id, which no digest matches.
    Column("session_id", String(64), nullable=True, index=True),
    Column("probabilities", Text, nullable=False),  # JSON {label: p}, coarsened to tenths
    Column("model_version", String(32), nullable=True),
)
recommended_items = Table(
    "recommended_items",
    metadata,
    Column("recommendation_id", String(36), ForeignKey("recommendations.id"), primary_key=True),
    Column("item_id", String(80), primary_key=True),
    Column("domain", String(16), nullable=False),
    Column("position", Integer, nullable=False),
)
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recommendation_id", String(36), ForeignKey("recommendations.id"), nullable=False, index=True),
    Column("item_id", String(80), nullable=False),
    Column("event", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("recommendation_id", "item_id", "event"),  # a replayed event is stored once
)
# One row per deletion (retention purge or a session's erasure): a replica that sees a new row rebuilds its
# learned state, because deleted events cannot be subtracted from incrementally kept figures.
deletions = Table(
    "deletions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("reason", String(16), nullable=False),
)


class UnknownRecommendationError(LookupError):
    """No recommendation has this id."""


class ItemNotRecommendedError(LookupError):
    """The item was not part of that recommendation."""


@dataclass(frozen=True)
class Recorded:
    event_id: int
    emotion: str  # the top emotion of the recommendation the event answers
    duplicate: bool = False  # the same event on the same item was already stored


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer; survives a crash
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged event is on disk
    cursor.execute("PRAGMA busy_timeout=5000")  # wait for another writer instead of failing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-1024")  # 1 MiB page cache per pooled connection: bounded memory
    cursor.close()


class FeedbackStore:
    """Synchronous store (call it from a worker thread in async code)."""

    def __init__(self, url: str, stats_ttl_s: float = 1.0) -> None:
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        for index in recommendations.indexes:  # a database created before the index existed gets it too
            index.create(self.engine, checkfirst=True)
        self._stats_ttl_s = stats_ttl_s
        self._stats: FeedbackStats | None = None
        self._stats_catalog: Catalog | None = None
        self._last_event_id = 0
        self._last_deletion_id = 0
        self._rebuilt_at = 0.0
        self._refreshed_at = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def save_recommendation(
        self,
        probabilities: dict[str, float],
        items: Sequence[tuple[str, str]],
        session_digest: str,
        model_version: str | None,
    ) -> str:
        """Store what was recommended (item id, domain pairs in order) under a session; return its id."""
        recommendation_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                insert(recommendations).values(
                    id=recommendation_id,
                    created_at=time.time(),
                    session_id=session_digest,
                    probabilities=json.dumps(coarsen(probabilities)),
                    model_version=model_version,
                )
            )
            if items:
                conn.execute(
                    insert(recommended_items),
                    [
                        {"recommendation_id": recommendation_id, "item_id": item_id, "domain": domain, "position": i}
                        for i, (item_id, domain) in enumerate(items)
                    ],
                )
        return recommendation_id

    def has_session(self, session_digest: str) -> bool:
        """Whether anything is stored under the session (an erased or expired session is unknown)."""
        with self.engine.connect() as conn:
            query = select(recommendations.c.id).where(recommendations.c.session_id == session_digest).limit(1)
            return conn.execute(query).first() is not None

    def record(self, recommendation_id: str, item_id: str, event_name: str, session_digest: str) -> Recorded:
        """Store one feedback event (once: a replay returns the stored one); it is durable when this returns.

        A recommendation of another session is unknown here, exactly as one that does not exist.
        """
        if event_name not in EVENTS:
            raise ValueError(f"unknown event {event_name!r}; known: {', '.join(EVENTS)}")
        try:
            with self.engine.begin() as conn:
                found = conn.execute(select(recommendations.c.probabilities, recommendations.c.session_id)
                                     .where(recommendations.c.id == recommendation_id)).first()  # fmt: skip
                if found is None or not hmac.compare_digest(str(found[1] or ""), session_digest):
                    raise UnknownRecommendationError(recommendation_id)
                probabilities: dict[str, float] = json.loads(found[0])
                top = max(probabilities, key=lambda label: probabilities[label]) if probabilities else "unknown"
                shown = recommended_items.c
                member = conn.execute(select(shown.item_id).where((shown.recommendation_id == recommendation_id)
                                                                  & (shown.item_id == item_id))).first()  # fmt: skip
                if member is None:
                    raise ItemNotRecommendedError(item_id)
                if (stored := _stored_event(conn, recommendation_id, item_id, event_name)) is not None:
                    return Recorded(stored, top, duplicate=True)
                result = conn.execute(insert(events).values(recommendation_id=recommendation_id, item_id=item_id,
                                                            event=event_name, created_at=time.time()))  # fmt: skip
        except IntegrityError:  # the same event, committed by a concurrent request in between
            with self.engine.connect() as conn:
                return Recorded(_stored_event(conn, recommendation_id, item_id, event_name) or 0, top, duplicate=True)
        with self._lock:
            self._refreshed_at = 0.0  # this process's next ranking sees its own event
        key = result.inserted_primary_key
        assert key is not None
        return Recorded(int(key[0]), top)

    def purge(self, older_than_s: float) -> int:
        """Delete recommendations (with their items and events) older than `older_than_s`; return how many."""
        cutoff = time.time() - older_than_s
        removed, _ = self._delete(recommendations.c.created_at < cutoff, "retention")
        return removed

    def delete_session(self, session_digest: str) -> tuple[int, int]:
        """Erase everything stored under a session; return (recommendations, events) deleted."""
        return self._delete(recommendations.c.session_id == session_digest, "erasure")

    def _delete(self, where: Any, reason: str) -> tuple[int, int]:
        with self.engine.begin() as conn:
            doomed = select(recommendations.c.id).where(where)
            removed_events = conn.execute(delete(events).where(events.c.recommendation_id.in_(doomed))).rowcount
            conn.execute(delete(recommended_items).where(recommended_items.c.recommendation_id.in_(doomed)))
            removed = conn.execute(delete(recommendations).where(where)).rowcount
            if removed:
                conn.execute(insert(deletions).values(created_at=time.time(), reason=reason))
        if removed:
            with self._lock:
                self._stats = None  # rebuild from what is left
        return int(removed or 0), int(removed_events or 0)

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

    def stats(self, catalog: Catalog) -> FeedbackStats:
        """Emotion-weighted successes and failures per (item, emotion), derived from the stored events.

        Per item and recommendation: successes = clicks + likes + purchases; failures = impressions not
        followed by a success, plus dismissals. Each counts toward the emotions in proportion to the
        recommendation's probability vector. Kept incrementally: a refresh reads only the recommendations
        that received events since the last one (so its cost does not grow with the history), and every
        replica reading the same database converges on the same figures.
        """
        with self._lock:
            fresh = time.monotonic() - self._refreshed_at < self._stats_ttl_s
            if self._stats is not None and self._stats_catalog is catalog and fresh:
                return self._stats
            deletion_id = self._latest_deletion()
            stale = time.monotonic() - self._rebuilt_at > FULL_REBUILD_S or deletion_id != self._last_deletion_id
            if self._stats is None or self._stats_catalog is not catalog or stale:
                base, last_id = FeedbackStats.empty(catalog), 0
                self._last_deletion_id, self._rebuilt_at = deletion_id, time.monotonic()
            else:  # copy: a ranking may still be reading the previous arrays
                base = FeedbackStats(self._stats.successes.copy(), self._stats.failures.copy())
                last_id = self._last_event_id
            self._stats, self._last_event_id = self._apply_events_since(catalog, base, last_id)
            self._stats_catalog, self._refreshed_at = catalog, time.monotonic()
            return self._stats

    def _latest_deletion(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(deletions.c.id))).scalar_one() or 0)

    def _apply_events_since(self, catalog: Catalog, stats: FeedbackStats, last_id: int) -> tuple[FeedbackStats, int]:
        with self.engine.connect() as conn:
            max_id = conn.execute(select(func.max(events.c.id))).scalar_one() or 0
            if max_id <= last_id:
                return stats, last_id
            touched = list(
                conn.execute(select(events.c.recommendation_id).where(events.c.id > last_id).distinct()).scalars()
            )
            rows: list[tuple[str, str, str, int]] = []
            probabilities: dict[str, str] = {}
            for i in range(0, len(touched), 500):  # bounded IN lists
                chunk = touched[i : i + 500]
                rows += [
                    (r, it, e, int(n))
                    for r, it, e, n in conn.execute(
                        select(events.c.recommendation_id, events.c.item_id, events.c.event, events.c.id).where(
                            events.c.recommendation_id.in_(chunk) & (events.c.id <= max_id)
                        )
                    )
                ]
                query = select(recommendations.c.id, recommendations.c.probabilities)
                for recommendation_id, probability_json in conn.execute(query.where(recommendations.c.id.in_(chunk))):
                    probabilities[recommendation_id] = probability_json
        before: dict[tuple[str, str], dict[str, int]] = {}
        after: dict[tuple[str, str], dict[str, int]] = {}
        for recommendation_id, item_id, event_name, event_id in rows:
            key = (recommendation_id, item_id)
            after.setdefault(key, {}).setdefault(event_name, 0)
            after[key][event_name] += 1
            if event_id <= last_id:
                before.setdefault(key, {}).setdefault(event_name, 0)
                before[key][event_name] += 1
        for (recommendation_id, item_id), counts in after.items():
            row = catalog.index.get(item_id)
            if row is None or recommendation_id not in probabilities:
                continue  # an item since removed from the catalog
            p = json.loads(probabilities[recommendation_id])
            weights = np.array([float(p.get(label, 0.0)) for label in catalog.labels])
            s1, f1 = _outcomes(counts)
            s0, f0 = _outcomes(before.get((recommendation_id, item_id), {}))
            if (s1, f1) != (s0, f0):
                stats.add(row, weights, s1 - s0, f1 - f0)
        return stats, int(max_id)


def _stored_event(conn: Any, recommendation_id: str, item_id: str, event_name: str) -> int | None:
    query = select(events.c.id).where((events.c.recommendation_id == recommendation_id)
                                      & (events.c.item_id == item_id) & (events.c.event == event_name))  # fmt: skip
    found = conn.execute(query.limit(1)).first()
    return int(found[0]) if found is not None else None


def _outcomes(counts: dict[str, int]) -> tuple[int, int]:
    """(successes, failures) of one recommended item from its event counts: at most one outcome per item shown.

    A success if any success event came (click, like, purchase), else a failure if it was seen (impression) or
    dismissed. Repeating an event changes nothing, so one client cannot outvote everyone by replaying it.
    """
    if any(counts.get(e, 0) for e in SUCCESS_EVENTS):
        return 1, 0
    return 0, int(counts.get("impression", 0) > 0 or counts.get("dismiss", 0) > 0)
