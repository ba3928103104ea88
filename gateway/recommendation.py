"""Mood-aware ranking: Thompson sampling over a two-level posterior of each item's click-through per emotion.

The catalog says how well each item suits each emotion; feedback says how often people actually click. The
model (see `Posterior`) has two levels, both in units of clicks so that a handful of clicks moves them:

  item        theta_i, how much better or worse the item does than the catalog expects under every emotion
              (its quality: some songs are simply better). Gamma(ITEM_PRIOR_CLICKS + clicks, ITEM_PRIOR_CLICKS +
              expected clicks) - every click on the item, under any emotion, informs it.
  item x mood click-through, Beta with a prior worth PAIR_PRIOR_CLICKS pseudo-clicks centred on theta_i times the
              catalog's expectation for that emotion, plus the clicks and misses attributed to that emotion.

Feedback is attributed to emotions in proportion to the probability vector of the recommendation it answered.
A request draws one sample per level (Thompson sampling, the posterior's spread scaled by POSTERIOR_SPREAD)
and scores each item by its expected click-through under the request's emotion probabilities, so uncertainty
in the emotion (not only the top label) and uncertainty in the click-through both shape the ranking. A
per-category cap keeps a domain's list diverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog, Item

FIT_EXPONENT = 3.0  # how sharply the catalog affinity separates suitable from unsuitable items
DEFAULT_CTR = 0.1  # click-through per unit of catalog fit assumed before any feedback
BASE_STRENGTH = 20.0  # pseudo-trials behind DEFAULT_CTR; the observed rate takes over as feedback comes in
ITEM_PRIOR_CLICKS = 2.0  # theta_i ~ Gamma(2, 2) a priori: mean 1 (the catalog is right on average), sd 0.71
PAIR_PRIOR_CLICKS = 10.0  # per-emotion affinity trusted to about +-30 % once the item's level is known
# Thompson sampling draws from the posterior with its standard deviation multiplied by this: 1 is plain
# Thompson sampling, 0 ranks by the posterior mean. Scaling the spread down trades exploration for exploitation
# (cf. Chapelle & Li, "An Empirical Evaluation of Thompson Sampling", NeurIPS 2011); with 330 x 7 arms and few
# clicks each, plain sampling explores too much. bench/recommendation.py on seeds 100-105 (not the README's):
# CTR vs the static map 1.11x over 5,000 learning rounds and 1.25x after them at 1; 1.22x / 1.34x at 0.5;
# 1.27-1.29x / 1.37-1.41x anywhere from 0 to 0.3. Not 0: a little sampling keeps an unlucky item from being
# shut out for good.
POSTERIOR_SPREAD = 0.2
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
    bad = {k: v for k, v in probabilities.items() if not (np.isfinite(float(v)) and float(v) >= 0)}
    if bad:
        raise ValueError(f"the emotion probabilities must be finite and non-negative; got {bad}")
    vector = np.array([float(probabilities.get(label, 0.0)) for label in labels])
    total = vector.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the emotion probabilities must be non-negative and sum to more than 0")
    return vector / total


@dataclass(frozen=True)
class Posterior:
    """The two-level posterior of every (item, emotion) click-through (see the module docstring)."""

    expected: np.ndarray  # items x labels: click-through the catalog alone predicts (base rate x fit)
    item_shape: np.ndarray  # items: Gamma posterior of the item multiplier theta_i
    item_rate: np.ndarray
    successes: np.ndarray  # items x labels, emotion-weighted feedback
    failures: np.ndarray

    @classmethod
    def fit(cls, catalog: Catalog, stats: FeedbackStats) -> Posterior:
        trials = stats.successes + stats.failures
        fit = (catalog.affinity / max(float(catalog.affinity.mean()), 1e-6)) ** FIT_EXPONENT
        base = (stats.successes.sum() + DEFAULT_CTR * BASE_STRENGTH) / ((trials * fit).sum() + BASE_STRENGTH)
        expected = base * fit
        shape = ITEM_PRIOR_CLICKS + stats.successes.sum(1)
        rate = ITEM_PRIOR_CLICKS + (trials * expected).sum(1)  # clicks the catalog would have predicted
        return cls(expected, shape, rate, stats.successes, stats.failures)

    def pair(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters per (item, emotion) given the item multipliers: prior mean theta_i x expected."""
        mean = np.clip(theta[:, None] * self.expected, 1e-4, 0.99)
        alpha = PAIR_PRIOR_CLICKS + self.successes
        beta = PAIR_PRIOR_CLICKS * (1.0 - mean) / mean + self.failures
        return alpha, beta

    def mean(self) -> np.ndarray:
        """Posterior mean click-through per (item, emotion), the item multipliers at their means."""
        alpha, beta = self.pair(self.item_shape / self.item_rate)
        return np.asarray(alpha / (alpha + beta))

    def sample(self, rng: np.random.Generator, spread: float = POSTERIOR_SPREAD) -> np.ndarray:
        """One plausible click-through per (item, emotion): theta_i first, then the pair given theta_i.

        Dividing both parameters of a Gamma or a Beta by spread**2 keeps its mean and multiplies its standard
        deviation by about `spread`.
        """
        if spread <= 0:
            return self.mean()
        v = spread * spread
        theta = rng.gamma(self.item_shape / v, v / self.item_rate)
        alpha, beta = self.pair(theta)
        return np.asarray(rng.beta(alpha / v, beta / v))


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
    sampled = Posterior.fit(catalog, stats).sample(rng)  # items x labels
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
