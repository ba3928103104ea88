"""Mood-aware ranking: Thompson sampling over Beta posteriors of each item's click-through per emotion.

Each (item, emotion) pair has a Beta posterior (see `posterior`: a hierarchical prior from the catalog
affinity and the item's pooled click-through), updated by feedback attributed to emotions in proportion to
the probability vector of the recommendation it answered. A request draws one sample per (item, emotion)
and scores each item by its expected reward under the request's emotion probabilities, so uncertainty in the
emotion (not only the top label) and uncertainty in the click-through both shape the ranking. A per-category
cap keeps a domain's list diverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog, Item

PRIOR_STRENGTH = 100.0  # pseudo-observations behind each (item, emotion) prior
ITEM_STRENGTH = 50.0  # pseudo-observations behind an item's pooled rate (shrunk toward the global rate)
FIT_EXPONENT = 3.0  # how sharply the catalog affinity separates suitable from unsuitable items
DEFAULT_CTR = 0.1  # click-through assumed before any feedback; replaced by the observed rate as data comes in
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

    def add(self, row: int, emotion: np.ndarray, successes: float, failures: float) -> None:
        """Credit one item's outcomes to the emotions in proportion to the recommendation's probabilities."""
        self.successes[row] += successes * emotion
        self.failures[row] += failures * emotion


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


def posterior(catalog: Catalog, stats: FeedbackStats) -> tuple[np.ndarray, np.ndarray]:
    """Beta parameters per (item, emotion): a hierarchical, empirical-Bayes prior updated by feedback.

    The prior mean is the item's pooled click-through (all emotions, shrunk toward the global rate) scaled by
    the catalog's emotion fit (affinity relative to the catalog mean, sharpened by FIT_EXPONENT), worth
    PRIOR_STRENGTH observations: what is learned about an item under one emotion informs the others, and the
    catalog prior speaks in click-through units. Each (item, emotion) then adds its own evidence.
    """
    trials = stats.successes + stats.failures
    fit = (catalog.affinity / max(float(catalog.affinity.mean()), 1e-6)) ** FIT_EXPONENT
    global_rate = (stats.successes.sum() + DEFAULT_CTR * ITEM_STRENGTH) / ((trials * fit).sum() + ITEM_STRENGTH)
    exposure = (trials * fit).sum(1)  # fit-weighted trials per item
    item_rate = (stats.successes.sum(1) + ITEM_STRENGTH * global_rate) / (exposure + ITEM_STRENGTH)
    prior_mean = np.clip(item_rate[:, None] * fit, 1e-3, 0.95)
    alpha = PRIOR_STRENGTH * prior_mean + stats.successes
    beta = PRIOR_STRENGTH * (1.0 - prior_mean) + stats.failures
    return alpha, beta


def rank(
    catalog: Catalog,
    emotion: np.ndarray,
    stats: FeedbackStats,
    domains: list[str],
    k: int,
    rng: np.random.Generator,
    uncertain: bool = False,
) -> dict[str, list[Ranked]]:
    """Top-k items per domain for a person whose emotion distribution is `emotion` (catalog label order).

    `uncertain`: the emotion was read with low confidence; the ranking is the same expectation over the whole
    distribution, and the reasons say so instead of naming one mood.
    """
    alpha, beta = posterior(catalog, stats)
    sampled = rng.beta(alpha, beta)  # items x labels: one plausible click-through per (item, emotion)
    scores = sampled @ emotion  # expected click-through under the emotion distribution
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
            reason = _uncertain_reason(item) if uncertain else _reason(item, mood, stats.successes[i, top])
            chosen.append(Ranked(item, float(scores[i]), reason))
            if len(chosen) == k:
                break
        result[domain] = chosen
    return result


def _reason(item: Item, mood: str, successes: float) -> str:
    reason = f"{item.category.replace('-', ' ')} suits a {mood} mood"
    if successes >= 1.0:
        reason += f"; liked by people who looked {mood}"
    return reason


def _uncertain_reason(item: Item) -> str:
    return f"{item.category.replace('-', ' ')} suits the moods your face may show (no clear emotion was read)"
