"""A Bayesian linear learner: mood effects shared between items through their features, plus per-item residuals.

The click-through of item i under emotion e is modelled, in click-through units, as
    ctr[i, e] = base + t[e] * prior[i, e] + phi[i] . w[e] + a[i] + c[i]
  prior   the catalog's expectation as a deviation from the learned base rate (gateway/learner.py
          `catalog_fit`), weighted by a learned trust t[e] ~ N(CATALOG_TRUST, CATALOG_TRUST_SD^2) per emotion
  phi[i]  the item's features: its domain, its category and every tag that at least two items carry, scaled so
          each item's vector has unit length; w[e] ~ N(0, WEIGHT_SD^2 I) per emotion. A like of one melancholic
          film moves every item that shares its genre or tags, for the emotions it was credited to
  a[i]    the item's residual shared by all emotions (its quality), ~ N(0, ITEM_SD^2): learned from every
          emotion's evidence at once, as fast as an emotion-blind learner learns it
  c[i]    what the last shared fit leaves unexplained of the item's evidence (what came since included),
          pooled over emotions, with CELL_PRIOR_TRIALS pseudo-trials (`cell_update`, on every refresh): what is
          specific to an emotion is learned only through t[e] and w[e], from many items' evidence, never from
          one item's few votes
Observations are the decayed per-(item, emotion) sums of gateway/learner.py's `Evidence` (so old evidence is
discounted by the same half-life and an erased session is subtracted the same way), with a Gaussian likelihood
of per-trial variance base * (1 - base). w and a are fitted by a few rounds of alternating exact Gaussian
updates (backfitting): w[e] given a is a ridge regression per emotion (features x features, solved exactly),
a given w is a per-item shrinkage. The posterior handed to the ranking is each (item, emotion)'s marginal mean
and variance (feature covariance included), so gateway/recommendation.py samples from it as from the other
learner: Thompson sampling on the marginals, not one joint draw of w per request.

Abuse bound: an item's first votes are discounted until others corroborate them (`corroborated`: one like
counts 1/9 of a like, one dismissal 0.4 of a miss), an item's residual has ~NOISE/ITEM_SD^2 (about 50)
pseudo-trials behind it and a feature weight hundreds of items' evidence: one like or dismissal moves an item's
share of lists by at most 5 points (tests/gateway/test_feedback_store.py). The posterior is sampled with its
spread tempered to LINEAR_SPREAD (more exploitation; plain Thompson sampling over ~3,200 items x 7 emotions
explores too much, README "Offline evaluation of the ranking").
Numpy only: the gateway runs it (no torch).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog
from gateway.learner import BASE_STRENGTH, DEFAULT_CTR, MAX_PRIOR_CTR, Posterior, catalog_fit, corroborated

CATALOG_TRUST = 0.5  # prior mean of the weight on the catalog's affinities
CATALOG_TRUST_SD = 0.5  # and its prior sd
WEIGHT_SD = 0.03  # prior sd of a feature's mood effect, in click-through units
ITEM_SD = 0.045  # prior sd of an item's quality residual: ~45 pseudo-trials at a 0.1 base rate
CELL_PRIOR_TRIALS = 100.0
MIN_TAG_ITEMS = 2  # a tag on one item only is that item's residual, not a shared feature
MAX_FEATURES = 512  # the most frequent tags beyond this are dropped (a 100,000-item catalog stays fast)
LEARNERS = ("beta", "linear")  # gateway/learner.py's Beta-Gamma learner, or this one
# The default: both learners pass the ranking gate of bench/recommendation.py in all 15 worlds over five seeds,
# and `linear` earns more likes in the 11 where mood explains at most half of taste (5.5-6.7 vs 4.5-5.8 per 100;
# a tie or a small loss in the other 4), with one vote's reach under 5 points (+4.1; beta +1.5). README,
# "Offline evaluation of the ranking".
DEFAULT_LEARNER = "linear"
LINEAR_SPREAD = 0.6  # the linear learner's Thompson draws: tempered (see `Posterior.spread` and the README)
CORROBORATION_VOTES = 8.0  # an item's first likes count s / (s + this) each (`corroborated`)
CORROBORATION_MISSES = 1.5  # and its first misses and dismissals f / (f + this)
ROUNDS = 2  # backfitting rounds: w and a barely move after the second (checked on the bench's worlds)


@dataclass(frozen=True)
class ItemFeatures:
    """A catalog's sparse item x feature matrix as (item, feature, value) triples, and its pairs per item."""

    n_items: int
    n_features: int
    item: np.ndarray  # nonzeros
    feature: np.ndarray
    value: np.ndarray
    pair_item: np.ndarray  # every (f1, f2) pair within one item: phi^T N phi and phi C phi^T in bincounts
    pair_key: np.ndarray  # f1 * n_features + f2
    pair_value: np.ndarray

    @classmethod
    def of(cls, catalog: Catalog) -> ItemFeatures:
        """Domain, category and shared-tag features of every item, each item's vector of unit length."""
        tag_counts = Counter((item.domain, tag) for item in catalog.items for tag in set(item.tags))
        shared = [key for key, n in tag_counts.most_common() if n >= MIN_TAG_ITEMS]
        names: dict[tuple[str, str, str], int] = {}
        for item in catalog.items:
            names.setdefault(("domain", item.domain, ""), len(names))
            names.setdefault(("category", item.domain, item.category), len(names))
        for domain, tag in shared[: max(MAX_FEATURES - len(names), 0)]:
            names.setdefault(("tag", domain, tag), len(names))
        items, features = [], []
        for row, item in enumerate(catalog.items):
            keys = [("domain", item.domain, ""), ("category", item.domain, item.category),
                    *(("tag", item.domain, t) for t in sorted(set(item.tags)))]  # fmt: skip
            own = [names[k] for k in keys if k in names]
            items += [row] * len(own)
            features += own
        item_arr, feature_arr = np.array(items, dtype=np.int64), np.array(features, dtype=np.int64)
        value = 1.0 / np.sqrt(np.bincount(item_arr, minlength=len(catalog.items))[item_arr])
        return cls(len(catalog.items), len(names), item_arr, feature_arr, value, *_pairs(item_arr, feature_arr,
                                                                                       value, len(names)))

    def times(self, w: np.ndarray) -> np.ndarray:
        """phi @ w for w of shape (features,): one value per item."""
        return np.bincount(self.item, weights=self.value * w[self.feature], minlength=self.n_items)

    def transpose_times(self, v: np.ndarray) -> np.ndarray:
        """phi^T @ v for v of shape (items,)."""
        return np.bincount(self.feature, weights=self.value * v[self.item], minlength=self.n_features)

    def gram(self, n: np.ndarray) -> np.ndarray:
        """phi^T diag(n) phi for n of shape (items,)."""
        d = self.n_features
        return np.bincount(self.pair_key, weights=self.pair_value * n[self.pair_item], minlength=d * d).reshape(d, d)

    def quadratic(self, cov: np.ndarray) -> np.ndarray:
        """diag(phi cov phi^T): each item's variance under a feature-weight covariance."""
        weights = self.pair_value * cov.ravel()[self.pair_key]
        return np.bincount(self.pair_item, weights=weights, minlength=self.n_items)


def _pairs(item: np.ndarray, feature: np.ndarray, value: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    """Every ordered pair of one item's nonzeros (items hold a handful of features each)."""
    order = np.argsort(item, kind="stable")
    item, feature, value = item[order], feature[order], value[order]
    starts = np.searchsorted(item, np.arange(item.max() + 2 if len(item) else 1))
    pair_item, key, pair_value = [], [], []
    for width in np.unique(np.diff(starts)):
        if width == 0:
            continue
        rows = np.flatnonzero(np.diff(starts) == width)
        idx = starts[rows][:, None] + np.arange(width)  # rows x width
        f, v = feature[idx], value[idx]
        pair_item.append(np.repeat(rows, width * width))
        key.append((f[:, :, None] * d + f[:, None, :]).ravel())
        pair_value.append((v[:, :, None] * v[:, None, :]).ravel())
    return np.concatenate(pair_item), np.concatenate(key), np.concatenate(pair_value)


@dataclass(frozen=True)
class SharedFit:
    """The slow part of a linear fit (catalog trust, feature weights, item quality): refitted periodically."""

    linear: np.ndarray  # items x labels: prior + catalog term + phi @ w + quality
    linear_var: np.ndarray  # its per-(item, emotion) variance, quality excluded
    quality_var: np.ndarray  # items


def fit_linear(catalog: Catalog, features: ItemFeatures, successes: np.ndarray, failures: np.ndarray) -> Posterior:
    """The posterior of every (item, emotion) click-through under the model in the module docstring."""
    return cell_update(fit_shared(catalog, features, successes, failures), successes, failures)


def fit_shared(catalog: Catalog, features: ItemFeatures, successes: np.ndarray, failures: np.ndarray) -> SharedFit:
    """Catalog trust, feature weights and item quality by alternating exact Gaussian updates (see the docstring)."""
    successes = corroborated(successes, CORROBORATION_VOTES)
    failures = corroborated(failures, CORROBORATION_MISSES)
    trials = successes + failures
    unit = catalog_fit(catalog)
    base = (successes.sum() + DEFAULT_CTR * BASE_STRENGTH) / ((trials * unit).sum() + BASE_STRENGTH)
    catalog_term = np.clip(base * unit, 1e-4, MAX_PRIOR_CTR) - base  # the catalog's guess, as a deviation
    noise = float(base * (1.0 - base))
    mood = CATALOG_TRUST * catalog_term  # trust in the catalog starts at its prior, then phi @ w[e] is added
    quality = np.zeros(len(trials))
    quality_var = np.full(len(trials), ITEM_SD**2)
    linear_var = np.zeros_like(trials)
    for round_ in range(ROUNDS):
        residual = successes - trials * (base + mood)  # what the item residual has to explain
        precision = 1.0 / ITEM_SD**2 + trials.sum(axis=1) / noise
        quality, quality_var = residual.sum(axis=1) / noise / precision, 1.0 / precision
        target = successes - trials * (base + quality[:, None])  # what the catalog term and features explain
        mood, linear_var = _ridge(features, trials, target, catalog_term, noise, with_var=round_ == ROUNDS - 1)
    return SharedFit(np.clip(base + mood + quality[:, None], 1e-4, 0.99), linear_var, quality_var)


def cell_update(shared: SharedFit, successes: np.ndarray, failures: np.ndarray) -> Posterior:
    """Each item's own evidence on top of the shared fit, pooled over emotions: cheap, it runs on every refresh.

    The item's successes beyond what the shared fit expects of it (under the emotions it was shown to) move all
    its emotions alike, with CELL_PRIOR_TRIALS pseudo-trials: what is specific to an emotion comes from the
    shared part only (catalog trust and feature weights, learned from many items), so a noisy classifier's
    split of one item's few votes between emotions cannot reorder its emotions.
    """
    counted = corroborated(successes, CORROBORATION_VOTES)
    counted_successes = counted.sum(axis=1)
    trials = counted + corroborated(failures, CORROBORATION_MISSES)
    n = CELL_PRIOR_TRIALS + trials.sum(axis=1)
    expected = (trials * shared.linear).sum(axis=1)
    mean = np.clip(shared.linear + ((counted_successes - expected) / n)[:, None], 1e-4, 0.99)
    shrink = (CELL_PRIOR_TRIALS / n) ** 2
    typical = mean.mean(axis=1)
    # The item's own part is one draw for every emotion: its variance is the item's, not the (item, emotion)'s.
    item_var = typical * (1.0 - typical) / (n + 1.0) + shared.quality_var * shrink
    return Posterior(mean, shared.linear_var * shrink[:, None], successes, failures, item_var=item_var,
                     spread=LINEAR_SPREAD)


def _ridge(features: ItemFeatures, n: np.ndarray, target: np.ndarray, catalog_term: np.ndarray, noise: float,
           with_var: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per emotion, regress the residual successes on [catalog term, features]; return fitted values (items x
    labels) and, if asked, their variances.

    The catalog term's coefficient (how far to trust the catalog's affinities) has prior N(1, CATALOG_TRUST_SD^2):
    a catalog that guesses badly is learned away instead of anchoring every emotion's ranking.
    """
    d = features.n_features
    fitted, variance = np.zeros_like(n), np.zeros_like(n)
    prior_precision = np.diag([1.0 / CATALOG_TRUST_SD**2, *([1.0 / WEIGHT_SD**2] * d)])
    prior_mean = np.zeros(d + 1)
    prior_mean[0] = CATALOG_TRUST
    for e in range(n.shape[1]):
        x, ne = catalog_term[:, e], n[:, e]
        gram = np.empty((d + 1, d + 1))
        gram[1:, 1:] = features.gram(ne)
        gram[0, 1:] = gram[1:, 0] = features.transpose_times(ne * x)
        gram[0, 0] = float(ne @ (x * x))
        rhs = np.concatenate([[x @ target[:, e]], features.transpose_times(target[:, e])]) / noise
        precision = gram / noise + prior_precision
        rhs += prior_precision @ prior_mean
        if not with_var:  # a solve costs a fraction of an inverse; only the last round needs the variances
            w = np.linalg.solve(precision, rhs)
        else:
            cov = np.linalg.inv(precision)
            w = cov @ rhs
            variance[:, e] = (x * x * cov[0, 0] + 2 * x * features.times(cov[0, 1:])
                              + features.quadratic(cov[1:, 1:]))  # fmt: skip
        fitted[:, e] = w[0] * x + features.times(w[1:])
    return fitted, variance



class Fitter:
    """Fits the chosen learner's posterior from decayed evidence (thread-safe).

    For the linear learner the shared part (a few small matrix inversions, ~10-100 ms on a busy 2-core machine)
    is refitted at most every `refit_s` seconds, or when `refit()` is called (the learned state's background
    thread does); in between a call only adds each (item, emotion)'s own evidence to the last shared fit
    (`cell_update`, about a millisecond), so a request never pays for the inversions. refit_s=0: always refit.
    """

    def __init__(self, kind: str = DEFAULT_LEARNER, shared: bool = True, refit_s: float = 0.0) -> None:
        if kind not in LEARNERS:
            raise ValueError(f"unknown learner {kind!r}; known: {', '.join(LEARNERS)}")
        self.kind, self.shared, self.refit_s = kind, shared, refit_s
        self._features: tuple[Catalog, ItemFeatures] | None = None
        self._shared: tuple[Catalog, SharedFit, float] | None = None

    def features(self, catalog: Catalog) -> ItemFeatures:
        cached = self._features
        if cached is None or cached[0] is not catalog:
            cached = (catalog, ItemFeatures.of(catalog))
            self._features = cached
        return cached[1]

    def refit(self, catalog: Catalog, successes: np.ndarray, failures: np.ndarray) -> None:
        """Refit the linear learner's shared part now (call it off the request path)."""
        if self.kind == "linear":
            fit = fit_shared(catalog, self.features(catalog), successes, failures)
            self._shared = (catalog, fit, time.monotonic())

    def __call__(self, catalog: Catalog, successes: np.ndarray, failures: np.ndarray) -> Posterior:
        if self.kind == "beta":
            return Posterior.fit(catalog, successes, failures, self.shared)
        cached = self._shared
        if cached is None or cached[0] is not catalog or time.monotonic() - cached[2] >= self.refit_s:
            self.refit(catalog, successes, failures)
            cached = self._shared
        assert cached is not None
        return cell_update(cached[1], successes, failures)
