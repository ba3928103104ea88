"""What feedback has taught: evidence per (item, emotion), and the posterior the ranking samples from.

Evidence is kept as sums that can be added to and subtracted from exactly (a deleted session's rows are
subtracted, never rebuilt around), and discounted by age: an event's weight halves every `half_life_s`, so
tastes that change are followed. To keep subtraction exact under decay, sums are stored against an anchor
time T0: an event at time t adds w * 2**((t - T0) / half_life); the value now is the sum times
2**(-(now - T0) / half_life).

The posterior of the click-through of item i under emotion e has three parts:
  prior     the catalog's expectation: a base rate x how well the item's affinity fits the emotion x its
            quality prior (`catalog_fit`); the base rate itself is learned from all feedback
  category  (shared learner only) a multiplier per (category, emotion), Gamma(G0 + clicks, G0 + expected
            clicks) over every item of the category: evidence on one film moves its genre-mates a little
  item      Beta with ITEM_PRIOR_TRIALS pseudo-trials at that mean, plus the item's own successes and failures
Each prior is worth tens of events, and an item's first votes count only part of a vote until others back them
up (`corroborated`: one like counts 1/(1 + CORROBORATION_VOTES) of a like), so a handful of votes (capped per
session and client, see gateway/abuse.py) moves an item a few percent, not off every list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog

FIT_EXPONENT = 2.0  # how sharply the catalog affinity separates suitable from unsuitable items
DEFAULT_CTR = 0.1  # click-through per unit of catalog fit assumed before any feedback
BASE_STRENGTH = 50.0  # pseudo-trials behind DEFAULT_CTR; the observed base rate takes over as feedback comes in
MAX_PRIOR_CTR = 0.6
ITEM_PRIOR_TRIALS = 100.0  # one vote moves an item's mean by at most 1/101 of the way to 0 or 1
CATEGORY_PRIOR_CLICKS = 100.0  # a category's multiplier moves by ~1/100 per click more or fewer than expected
QUALITY_SPAN = 0.5  # quality 0..1 scales the prior by 0.75..1.25
# An item's first likes count s / (s + this) each, its first misses and dismissals f / (f + CORROBORATION_MISSES):
# one like moves the bench's most-shown happy song by ~1.5 points of share (5.4 uncorroborated), and the learner
# earns as many likes on bench/recommendation.py's worlds as without it (README, "Recommendations")
CORROBORATION_VOTES = 2.0
CORROBORATION_MISSES = 1.5


@dataclass
class Evidence:
    """Anchored, decayed successes and failures per (item, emotion); see the module docstring."""

    successes: np.ndarray  # items x labels
    failures: np.ndarray
    anchor_s: float  # T0
    half_life_s: float | None  # None: no decay

    @classmethod
    def empty(cls, catalog: Catalog, anchor_s: float = 0.0, half_life_s: float | None = None) -> Evidence:
        shape = catalog.affinity.shape
        return cls(np.zeros(shape), np.zeros(shape), anchor_s, half_life_s)

    def copy(self) -> Evidence:
        return Evidence(self.successes.copy(), self.failures.copy(), self.anchor_s, self.half_life_s)

    def _scale(self, t_s: float) -> float:
        return 1.0 if self.half_life_s is None else float(2.0 ** ((t_s - self.anchor_s) / self.half_life_s))

    def add(self, row: int, emotion: np.ndarray, successes: float, failures: float, t_s: float = 0.0) -> None:
        """Credit one item's outcome (negative to subtract) to the emotions in proportion to the probabilities."""
        scale = self._scale(t_s)
        self.successes[row] += successes * scale * emotion
        self.failures[row] += failures * scale * emotion

    def now(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(successes, failures) as they weigh at `now_s`; tiny negative float residue clipped to 0."""
        scale = 1.0 / self._scale(now_s)
        return np.maximum(self.successes * scale, 0.0), np.maximum(self.failures * scale, 0.0)


def corroborated(evidence: np.ndarray, votes: float) -> np.ndarray:
    """Evidence per (item, emotion) discounted while its item has little: the item's total s counts s^2/(s + C).

    One vote on an item counts 1/(1 + C) of a vote, a handful about half, dozens almost fully: no single client
    (whose counted votes gateway/abuse.py caps) can flip an item for everyone, while items that many people
    liked (or that the server showed often without a click) are learned at nearly the full rate.
    """
    total = evidence.sum(axis=1, keepdims=True)
    return np.asarray(evidence * (total / (total + votes)))


def catalog_fit(catalog: Catalog) -> np.ndarray:
    """How much more (or less) than average the catalog expects each (item, emotion) to be clicked."""
    fit = (catalog.affinity / max(float(catalog.affinity.mean()), 1e-6)) ** FIT_EXPONENT
    return np.asarray(fit * (1.0 + QUALITY_SPAN * (catalog.quality[:, None] - 0.5)))


@dataclass(frozen=True)
class Posterior:
    """Mean and variance of every (item, emotion) click-through, and the evidence behind them."""

    mean: np.ndarray  # items x labels
    var: np.ndarray
    successes: np.ndarray  # the decayed evidence behind it (the reasons quote the successes)
    failures: np.ndarray
    # Variance of a part every emotion shares (an item's quality in gateway/linear_learner.py): it adds to the
    # score's variance whole, not weighted by the squared probabilities as the per-emotion parts are.
    item_var: np.ndarray | None = None  # items
    spread: float = 1.0  # Thompson sampling draws with the standard deviation times this (gateway/recommendation.py)

    @classmethod
    def fit(cls, catalog: Catalog, successes: np.ndarray, failures: np.ndarray, shared: bool = True) -> Posterior:
        """The posterior from decayed evidence; it keeps the raw evidence (the reasons quote it), learns from the
        corroborated one."""
        raw_successes, raw_failures = successes, failures
        successes = corroborated(successes, CORROBORATION_VOTES)
        failures = corroborated(failures, CORROBORATION_MISSES)
        trials = successes + failures
        unit = catalog_fit(catalog)
        base = (successes.sum() + DEFAULT_CTR * BASE_STRENGTH) / ((trials * unit).sum() + BASE_STRENGTH)
        prior = np.clip(base * unit, 1e-4, MAX_PRIOR_CTR)
        extra_var = np.zeros_like(prior)
        if shared:
            prior, extra_var = _category_level(catalog, prior, successes, trials)
        n = ITEM_PRIOR_TRIALS + trials
        mean = (ITEM_PRIOR_TRIALS * prior + successes) / n
        var = mean * (1.0 - mean) / (n + 1.0) + extra_var * (ITEM_PRIOR_TRIALS / n) ** 2
        return cls(mean, var, raw_successes, raw_failures)

    def scores(self, emotion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of every item's click-through averaged under the emotion distribution."""
        # Once per request for every item (cheaper than copying each domain's rows), with einsum's own loop: a
        # multithreaded BLAS call on a matrix this thin costs ~30x more on busy cores (measured: 4.4 vs 0.15 ms).
        mean = np.einsum("ij,j->i", self.mean, emotion)
        var = np.einsum("ij,j->i", self.var, emotion * emotion)
        return mean, np.sqrt(var if self.item_var is None else var + self.item_var)


def _category_level(
    catalog: Catalog, prior: np.ndarray, successes: np.ndarray, trials: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Prior means moved by each (category, emotion)'s multiplier, and the multiplier's variance in CTR units."""
    codes = catalog.category_codes
    n_categories = int(codes.max()) + 1 if len(codes) else 0
    clicks = np.zeros((n_categories, prior.shape[1]))
    expected = np.zeros_like(clicks)
    np.add.at(clicks, codes, successes)
    np.add.at(expected, codes, trials * prior)
    shape = CATEGORY_PRIOR_CLICKS + clicks
    rate = CATEGORY_PRIOR_CLICKS + expected
    multiplier, multiplier_var = shape / rate, shape / rate**2
    moved = np.clip(prior * multiplier[codes], 1e-4, 0.99)
    return moved, prior**2 * multiplier_var[codes]
