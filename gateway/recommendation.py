"""Mood-aware ranking: Thompson sampling over the learned click-through of each item under each emotion.

An item's score for a person is its click-through averaged under the person's emotion probabilities, so an
unclear face mixes moods instead of betting on the top label. A request draws one plausible score per item
from a normal approximation of the posterior (gateway/learner.py: mean and variance per (item, emotion)) with
its spread scaled by the learner's `Posterior.spread`, ranks, and keeps at most PER_CATEGORY_CAP items of one
category. Each shown item carries the probability it had of being shown (`propensity`), estimated under that
same sampling policy, so the impression log can serve off-policy evaluation later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog, Item
from gateway.learner import Posterior
from gateway.reasons import reason

PER_CATEGORY_CAP = 2  # at most this many items of one category in a domain's list
UNCLEAR_MAX_P = 0.4  # a vector whose largest probability is below this is an unclear reading (uniform: 1/7)
MIN_PROPENSITY = 1e-3


@dataclass(frozen=True)
class Ranked:
    item: Item
    score: float
    reason: str
    propensity: float  # estimated probability that the sampling policy shows this item in this list


def align(probabilities: dict[str, float], labels: tuple[str, ...]) -> np.ndarray:
    """A probability vector in the catalog's label order, renormalised; unknown labels are an error."""
    unknown = set(probabilities) - set(labels)
    if unknown:
        raise ValueError(f"unknown emotion label(s) {sorted(unknown)}; known: {', '.join(labels)}")
    bad = {k: v for k, v in probabilities.items() if not (np.isfinite(float(v)) and float(v) >= 0)}
    if bad:
        raise ValueError(f"the emotion probabilities must be finite and non-negative; got {bad}")
    vector = np.array([float(probabilities.get(label, 0.0)) for label in labels])
    total = vector.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the emotion probabilities must be non-negative and sum to more than 0")
    return vector / total


def is_unclear(emotion: np.ndarray) -> bool:
    """Whether a probability vector names no emotion clearly (e.g. uniform), whatever sent it."""
    return float(emotion.max()) < UNCLEAR_MAX_P


def rank(
    catalog: Catalog,
    emotion: np.ndarray,
    posterior: Posterior,
    domains: list[str],
    k: int,
    rng: np.random.Generator,
    uncertain: bool = False,
    spread: float | None = None,
) -> dict[str, list[Ranked]]:
    """Top-k items per domain for a person whose emotion distribution is `emotion` (catalog label order).

    `uncertain`: the face was read with low confidence (a vector that names no emotion clearly counts too);
    the ranking is the same expectation over the whole distribution and the reasons say so.
    """
    unclear = uncertain or is_unclear(emotion)
    spread = posterior.spread if spread is None else spread
    result: dict[str, list[Ranked]] = {}
    all_mean, all_sd = posterior.scores(emotion)
    for domain in domains:
        rows = catalog.in_domain(domain)
        mean, sd = all_mean[rows], all_sd[rows]
        sampled = mean + spread * sd * rng.standard_normal(len(rows))
        chosen = select(sampled, catalog.category_codes[rows], k)
        bar = float(sampled[chosen[-1]]) if chosen else 0.0
        result[domain] = [
            Ranked(
                catalog.items[rows[j]],
                float(sampled[j]),
                reason(catalog, int(rows[j]), emotion, posterior, unclear),
                _propensity(float(mean[j]), spread * float(sd[j]), bar),
            )
            for j in chosen
        ]
    return result


def select(scores: np.ndarray, categories: np.ndarray, k: int, cap: int = PER_CATEGORY_CAP) -> list[int]:
    """Positions of the k best scores with at most `cap` per category (a partial sort first: big catalogs)."""
    n = len(scores)
    for pool in (min(n, max(8 * k, 64)), n):
        top = np.argpartition(-scores, pool - 1)[:pool] if pool < n else np.arange(n)
        chosen: list[int] = []
        per_category: dict[int, int] = {}
        for j in top[np.argsort(-scores[top], kind="stable")]:
            c = int(categories[j])
            if per_category.get(c, 0) < cap:
                per_category[c] = per_category.get(c, 0) + 1
                chosen.append(int(j))
                if len(chosen) == k:
                    return chosen
        if pool == n:
            return chosen
    return []


def _propensity(mean: float, sd: float, bar: float) -> float:
    """P(a fresh draw of this item's score clears the bar this list set): the chance the policy shows it.

    An estimate: it holds the bar (the lowest shown score) fixed and ignores the category cap.
    """
    if sd <= 0:
        return 1.0 if mean >= bar else MIN_PROPENSITY
    p = 0.5 * (1.0 + math.erf((mean - bar) / (sd * math.sqrt(2.0))))
    return min(1.0, max(MIN_PROPENSITY, p))
