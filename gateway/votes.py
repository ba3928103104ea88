"""Which feedback events count toward learning, and the evidence each one adds (see gateway/abuse.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, update

from gateway.abuse import SESSION_COUNTED_VOTES
from gateway.feedback_schema import evidence, recommendations
from gateway.feedback_schema import recommended_items as shown
from gateway.vocabulary import SUCCESS_EVENTS

# The outcome the learner counts for an item shown, in the order an event may move it: a miss weighted by the
# position (shown), a full miss (seen: the client confirmed it was on screen; dismissed), a success.
RANK = {"shown": 0, "seen": 1, "dismissed": 1, "success": 2}


class UnknownRecommendationError(LookupError):
    """No recommendation has this id (in this session)."""


class ItemNotRecommendedError(LookupError):
    """The item was not part of that recommendation."""


def examination(position: int) -> float:
    """How likely a person looks at the item at `position` (0-based) of a list: the DCG discount 1/log2(p+2)."""
    return 1.0 / math.log2(position + 2)


def outcome_value(outcome: str, miss_weight: float) -> tuple[float, float]:
    """(successes, failures) an outcome contributes."""
    return {"shown": (0.0, miss_weight), "success": (1.0, 0.0)}.get(outcome, (0.0, 1.0))


def target_outcome(event_name: str) -> str:
    return "success" if event_name in SUCCESS_EVENTS else "dismissed" if event_name == "dismiss" else "seen"


def count_vote(conn: Any, recommendation_id: str, item_id: str, event_name: str, session_digest: str,
               recommendation: Any, client_allows: Callable[[], bool]) -> bool:  # fmt: skip
    """Within the caller's transaction: move the item's counted outcome if the caps allow; True if counted."""
    here = (shown.c.recommendation_id == recommendation_id) & (shown.c.item_id == item_id)
    row = conn.execute(select(shown.c.outcome, shown.c.miss_weight, shown.c.vote_counted).where(here)).first()
    if row is None:
        raise ItemNotRecommendedError(item_id)
    outcome, miss_weight = row[0] or "shown", float(row[1] or 0.0)
    target = target_outcome(event_name)
    if RANK[target] <= RANK[outcome]:
        return False  # nothing new for the learner (a like after a like, a dismissal after a confirmed view)
    if not row[2] and not _vote_allowed(conn, item_id, session_digest, client_allows):
        return False
    s0, f0 = outcome_value(outcome, miss_weight)
    s1, f1 = outcome_value(target, miss_weight)
    conn.execute(insert(evidence).values(recommendation_id=recommendation_id, item_id=item_id,
                                         served_at=float(recommendation[2]), probabilities=recommendation[0],
                                         successes=s1 - s0, failures=f1 - f0))  # fmt: skip
    conn.execute(update(shown).where(here).values(outcome=target, vote_counted=True))
    return True


def _vote_allowed(conn: Any, item_id: str, session_digest: str, client_allows: Callable[[], bool]) -> bool:
    """A session's first vote on this item, within the session's cap, and (last: it spends) the client's."""
    mine = select(recommendations.c.id).where(recommendations.c.session_id == session_digest)
    votes = select(shown.c.item_id).where(shown.c.recommendation_id.in_(mine) & shown.c.vote_counted.is_(True))
    counted = list(conn.execute(votes.limit(SESSION_COUNTED_VOTES)).scalars())
    if item_id in counted or len(counted) >= SESSION_COUNTED_VOTES:  # under the cap, `counted` is complete
        return False
    return client_allows()
