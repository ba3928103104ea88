"""Mood-aware ranking: Thompson sampling over Beta posteriors of each item's click-through per emotion.

Each (item, emotion) pair has a Beta posterior whose prior is the catalog affinity worth `PRIOR_STRENGTH`
pseudo-observations, updated by feedback attributed to emotions in proportion to the probability vector of
the recommendation it answered. A request draws one sample per (item, emotion) and scores each item by its
expected reward under the request's emotion probabilities, so uncertainty in the emotion (not only the top
label) and uncertainty in the click-through both shape the ranking. A per-category cap keeps a domain's list
diverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog, Item

PRIOR_STRENGTH = 4.0  # the catalog prior counts as this many observations
PER_CATEGORY_CAP = 2  # at most this many items of one category in a domain's list


@dataclass(frozen=True)
class FeedbackStats:
    """Emotion-weighted feedback per item: items x labels arrays of successes and failures."""

    successes: np.ndarray
    failures: np.ndarray

    @classmethod
    def empty(cls, catalog: Catalog) -> FeedbackStats:
        shape = catalog.affinity.shape
        return cls(np.zeros(shape), np.zeros(shape))


@dataclass(frozen=True)
class Ranked:
    item: Item
    score: float
    reason: str


def align(probabilities: dict[str, float], labels: tuple[str, ...]) -> np.ndarray:
    """A probability vector in the catalog's label order, renormalised; unknown labels are an error."""
    unknown = set(probabilities) - set(labels)
    if unknown:
        raise ValueError(f"unknown emotion label(s) {sorted(unknown)}; known: {', '.join(labels)}")
    vector = np.array([max(float(probabilities.get(label, 0.0)), 0.0) for label in labels])
    total = vector.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the emotion probabilities must be non-negative and sum to more than 0")
    return vector / total


def rank(
    catalog: Catalog,
    emotion: np.ndarray,
    stats: FeedbackStats,
    domains: list[str],
    k: int,
    rng: np.random.Generator,
) -> dict[str, list[Ranked]]:
    """Top-k items per domain for a person whose emotion distribution is `emotion` (catalog label order)."""
    alpha = 1.0 + PRIOR_STRENGTH * catalog.affinity + stats.successes
    beta = 1.0 + PRIOR_STRENGTH * (1.0 - catalog.affinity) + stats.failures
    sampled = rng.beta(alpha, beta)  # items x labels: one plausible click-through per (item, emotion)
    scores = sampled @ emotion
    top = int(np.argmax(emotion))
    mood = catalog.labels[top]
    result: dict[str, list[Ranked]] = {}
    for domain in domains:
        members = catalog.in_domain(domain)
        chosen: list[Ranked] = []
        per_category: dict[str, int] = {}
        for i in sorted(members, key=lambda i: -scores[i]):
            item = catalog.items[i]
            if per_category.get(item.category, 0) >= PER_CATEGORY_CAP:
                continue
            per_category[item.category] = per_category.get(item.category, 0) + 1
            chosen.append(Ranked(item, float(scores[i]), _reason(item, mood, stats.successes[i, top])))
            if len(chosen) == k:
                break
        result[domain] = chosen
    return result


def _reason(item: Item, mood: str, successes: float) -> str:
    reason = f"{item.category.replace('-', ' ')} suits a {mood} mood"
    if successes >= 1.0:
        reason += f"; liked by people who looked {mood}"
    return reason
