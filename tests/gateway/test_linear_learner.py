"""The linear learner: it learns a planted preference, shares it through features, and follows a flipped taste."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.catalog import DEFAULT_CATALOG, load_catalog
from gateway.learner import Evidence
from gateway.linear_learner import CORROBORATION_VOTES, Fitter, ItemFeatures, corroborated, fit_linear
from gateway.recommendation import align, rank

CATALOG = load_catalog(DEFAULT_CATALOG)
FEATURES = ItemFeatures.of(CATALOG)
SAD = CATALOG.labels.index("sad")
HAPPY = CATALOG.labels.index("happy")


def test_features_are_unit_rows_and_the_sparse_products_match_dense_ones() -> None:
    dense = np.zeros((FEATURES.n_items, FEATURES.n_features))
    np.add.at(dense, (FEATURES.item, FEATURES.feature), FEATURES.value)
    assert np.allclose((dense**2).sum(axis=1), 1.0)
    rng = np.random.default_rng(0)
    w, n = rng.normal(size=FEATURES.n_features), rng.random(FEATURES.n_items)
    cov = np.diag(rng.random(FEATURES.n_features))
    assert np.allclose(FEATURES.times(w), dense @ w)
    assert np.allclose(FEATURES.gram(n), dense.T @ (n[:, None] * dense))
    assert np.allclose(FEATURES.quadratic(cov), np.einsum("if,fg,ig->i", dense, cov, dense))


def _plant(evidence: Evidence, rows: np.ndarray, emotion: int, rate: float, t_s: float, rng: np.random.Generator,
           shows: int = 4000) -> None:  # fmt: skip
    """`shows` impressions to sad (or happy) people, spread over `rows`, liked at `rate` (planted taste)."""
    p = np.zeros(len(CATALOG.labels))
    p[emotion] = 1.0
    for row in rng.choice(rows, size=shows):
        liked = rng.random() < rate
        evidence.add(int(row), p, float(liked), float(not liked), t_s)


def test_it_learns_a_planted_preference_and_shares_it_with_unseen_genre_mates() -> None:
    rng = np.random.default_rng(1)
    horror = np.flatnonzero(np.array([i.domain == "movies" and i.category == CATALOG.items[r].category
                                      for r in [CATALOG.index[next(i.id for i in CATALOG.items
                                                                  if "horror" in i.tags)]] for i in CATALOG.items]))
    seen, unseen = horror[: len(horror) // 2], horror[len(horror) // 2:]
    others = np.setdiff1d(CATALOG.in_domain("movies"), horror)
    evidence = Evidence.empty(CATALOG)
    _plant(evidence, seen, SAD, 0.5, 0.0, rng)  # sad people love half of the horror films
    _plant(evidence, others, SAD, 0.02, 0.0, rng)  # and little else
    posterior = fit_linear(CATALOG, FEATURES, *evidence.now(0.0))
    assert posterior.mean[seen, SAD].mean() > 2 * posterior.mean[others, SAD].mean()
    assert posterior.mean[unseen, SAD].mean() > posterior.mean[others, SAD].mean()  # shared through features
    p = align({"sad": 1.0}, CATALOG.labels)
    top = rank(CATALOG, p, posterior, ["movies"], 5, np.random.default_rng(0))["movies"]
    assert sum(CATALOG.index[r.item.id] in horror for r in top) >= 2  # the per-category cap allows two


def test_decay_follows_a_flipped_taste() -> None:
    rng = np.random.default_rng(2)
    songs = CATALOG.in_domain("songs")
    first, second = songs[:10], songs[-10:]
    evidence = Evidence.empty(CATALOG, anchor_s=0.0, half_life_s=100.0)
    _plant(evidence, first, HAPPY, 0.5, 0.0, rng, 1500)
    _plant(evidence, second, HAPPY, 0.02, 0.0, rng, 1500)
    before = fit_linear(CATALOG, FEATURES, *evidence.now(0.0))
    assert before.mean[first, HAPPY].mean() > before.mean[second, HAPPY].mean()
    _plant(evidence, first, HAPPY, 0.02, 800.0, rng, 1500)  # eight half-lives later the taste has flipped
    _plant(evidence, second, HAPPY, 0.5, 800.0, rng, 1500)
    after = fit_linear(CATALOG, FEATURES, *evidence.now(800.0))
    assert after.mean[second, HAPPY].mean() > 2 * after.mean[first, HAPPY].mean()
    undecayed = Evidence.empty(CATALOG)  # the same history without decay still prefers the old favourites' mix
    rng = np.random.default_rng(2)
    for rows, rate, t_s in ((first, 0.5, 0.0), (second, 0.02, 0.0), (first, 0.02, 800.0), (second, 0.5, 800.0)):
        _plant(undecayed, rows, HAPPY, rate, t_s, rng, 1500)
    flat = fit_linear(CATALOG, FEATURES, *undecayed.now(800.0))
    gap = after.mean[second, HAPPY].mean() - after.mean[first, HAPPY].mean()
    assert gap > 2 * (flat.mean[second, HAPPY].mean() - flat.mean[first, HAPPY].mean())


def test_an_items_first_votes_count_less_until_others_corroborate_them() -> None:
    likes = np.zeros((3, 7))
    likes[0, HAPPY], likes[1, HAPPY], likes[2, [HAPPY, SAD]] = 1.0, 100.0, [2.0, 2.0]
    counted = corroborated(likes, CORROBORATION_VOTES)
    assert counted[0, HAPPY] == pytest.approx(1.0 / (1.0 + CORROBORATION_VOTES))  # one vote: a fraction of one
    assert counted[0, HAPPY] < 0.5
    assert counted[1, HAPPY] > 0.9 * 100.0  # many people: nearly in full
    assert counted[2, HAPPY] == counted[2, SAD] == pytest.approx(2.0 * 4.0 / (4.0 + CORROBORATION_VOTES))
    evidence = Evidence.empty(CATALOG)
    evidence.add(0, align({"happy": 1.0}, CATALOG.labels), 1.0, 0.0)
    posterior = Fitter("linear")(CATALOG, evidence.successes, evidence.failures)
    assert posterior.successes[0, HAPPY] == 1.0  # the reasons quote the counted votes themselves


def test_an_unknown_learner_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown learner"):
        Fitter("deep")
