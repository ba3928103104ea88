"""Deleting recommendations (a session's erasure, the retention purge) without rebuilding what was learned.

Each batch, in one transaction: the evidence rows of the doomed recommendations get negated copies (so every
process subtracts them as it follows the log), both are anonymised (no recommendation id), and the
recommendations, their items and events are deleted. The cancelled pairs are compacted away later
(gateway/learned_state.py). Short batches with a pause between them keep a large purge from holding the
database's write lock for long: requests' writes slot in between.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from gateway.feedback_schema import events, evidence, recommendations
from gateway.feedback_schema import recommended_items as shown


def delete_where(engine: Engine, where: Any, batch: int, pause_s: float) -> tuple[int, int]:
    """Delete the recommendations matching `where`, in batches; return (recommendations, events) deleted."""
    removed_recs = removed_events = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(select(recommendations.c.id).where(where).limit(batch)).scalars())
            if not ids:
                break
            now = time.time()
            e = evidence.c
            rows = conn.execute(select(e.item_id, e.served_at, e.probabilities, e.successes, e.failures)
                                .where(e.recommendation_id.in_(ids))).all()  # fmt: skip
            if rows:
                conn.execute(insert(evidence), [{"recommendation_id": None, "item_id": r[0], "served_at": r[1],
                                                 "probabilities": r[2], "successes": -r[3], "failures": -r[4],
                                                 "erased_at": now} for r in rows])  # fmt: skip
                conn.execute(update(evidence).where(e.recommendation_id.in_(ids))
                             .values(recommendation_id=None, erased_at=now))  # fmt: skip
            removed_events += int(conn.execute(delete(events).where(events.c.recommendation_id.in_(ids))).rowcount)
            conn.execute(delete(shown).where(shown.c.recommendation_id.in_(ids)))
            removed_recs += int(conn.execute(delete(recommendations).where(recommendations.c.id.in_(ids))).rowcount)
        if len(ids) < batch:
            break
        if pause_s:
            time.sleep(pause_s)
    return removed_recs, removed_events
