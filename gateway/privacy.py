"""What the gateway keeps about a person, and how little: session capabilities and coarsened emotion vectors.

Sessions are capabilities. The server issues every session id (256 random bits), so an id cannot be chosen
("alice") or guessed; whoever holds it may erase the session and send feedback on its recommendations, and no
one else may. The store keeps only the id's SHA-256 digest: a copy of the database grants no session.

Stored emotion vectors are coarsened to tenths. A model's full-precision output (seven 32-bit floats) is
practically unique to the photo it came from, so a stored row would single out that photo for as long as it is
kept (26 rows from one image held the identical vector). On a grid of tenths there are only 8,008 possible
vectors, and every face reading much the same emotion maps to the same one (a clearly happy face is
{happy: 1.0} or {happy: 0.9, neutral: 0.1}); the learner needs no more than that, since each outcome is split
across emotions in proportion to the vector and a tenth is finer than the classifier's own calibration error.
"""

from __future__ import annotations

import hashlib
import math
import secrets

SESSION_ID_BYTES = 32  # 256 random bits; base64url without padding: 43 characters
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{43}$"
STORED_PROBABILITY_STEP = 0.1


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def session_digest(session_id: str) -> str:
    """What the store keeps instead of the id (64 hex characters)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def coarsen(probabilities: dict[str, float], step: float = STORED_PROBABILITY_STEP) -> dict[str, float]:
    """The vector on a grid of `step` that still sums to 1 (largest remainders round up; ties by label order)."""
    units = round(1 / step)
    total = sum(max(p, 0.0) for p in probabilities.values())
    if total <= 0:
        return dict(probabilities)
    scaled = {label: max(p, 0.0) / total * units for label, p in probabilities.items()}
    counts = {label: math.floor(x) for label, x in scaled.items()}
    missing = units - sum(counts.values())
    by_remainder = sorted(scaled, key=lambda label: scaled[label] - counts[label], reverse=True)
    for label in by_remainder[:missing]:
        counts[label] += 1
    return {label: round(n * step, 10) for label, n in counts.items()}
