"""Why an item was recommended, in words that are true for the score and grammatical for every label.

A reason names the emotion(s) that carry the item's score: the item's expected click-through is a sum over
emotions of probability x learned click-through, and the reason names the largest terms, covering at least
CARRIED_SHARE of the score (at most two). It says when the face (or the vector sent) named no clear emotion,
and says that people liked the item only when enough counted likes stand behind it (REASON_MIN_LIKES).
"""

from __future__ import annotations

import numpy as np

from gateway.catalog import Catalog
from gateway.learner import Posterior

CARRIED_SHARE = 0.6
REASON_MIN_LIKES = 5.0  # decayed, counted likes under the named emotion; one vote per session per item counts
# The catalog's labels are nouns or adjectives; a mood is described with an adjective.
ADJECTIVES = {"angry": "angry", "anger": "angry", "disgust": "disgusted", "disgusted": "disgusted",
              "fear": "fearful", "fearful": "fearful", "happy": "happy", "happiness": "happy",
              "neutral": "neutral", "sad": "sad", "sadness": "sad", "surprise": "surprised",
              "surprised": "surprised", "contempt": "contemptuous", "calm": "calm"}  # fmt: skip


def adjective(label: str) -> str:
    """The adjective for a label; an unknown label is quoted rather than bent into a wrong word."""
    return ADJECTIVES.get(label.lower(), f"“{label}”")


def a_mood(label: str) -> str:
    """'a happy mood', 'an angry mood': the article agrees with the adjective."""
    word = adjective(label)
    article = "an" if word.lstrip("“")[:1].lower() in "aeiou" else "a"
    return f"{article} {word} mood"


def carriers(contributions: np.ndarray) -> list[int]:
    """Indices of the emotions whose terms carry the score, largest first (one or two)."""
    order = [int(i) for i in np.argsort(-contributions, kind="stable")]
    total = float(contributions.sum())
    if total <= 0:
        return order[:1]
    first = order[0]
    if contributions[first] >= CARRIED_SHARE * total or contributions[order[1]] <= 0:
        return [first]
    return order[:2]


def reason(catalog: Catalog, row: int, emotion: np.ndarray, posterior: Posterior, unclear: bool) -> str:
    """One sentence on why item `row` suits a person with this emotion distribution."""
    labels = catalog.labels
    kind = catalog.items[row].category.replace("-", " ")
    named = carriers(emotion * posterior.mean[row])
    words = [adjective(labels[i]) for i in named]
    if unclear:
        text = f"{kind}: no clear emotion was read from your face, so this is a broad pick that does best with " \
               + (a_mood(labels[named[0]]) if len(named) == 1 else f"{words[0]} and {words[1]} moods")  # fmt: skip
    elif len(named) == 2:
        text = f"{kind}: a match for your mix of {words[0]} and {words[1]}"
    elif emotion[named[0]] >= 0.5:
        text = f"{kind}: a match for {a_mood(labels[named[0]])}"
    else:
        text = f"{kind}: a match for the {words[0]} side of your expression ({emotion[named[0]]:.0%})"
    liked = [i for i in named if posterior.successes[row, i] >= REASON_MIN_LIKES]
    if liked:
        text += f"; people who looked {adjective(labels[liked[0]])} liked it"
    return text
