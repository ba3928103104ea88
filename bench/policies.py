"""The policies bench/recommendation.py compares, over the gateway's own ranking and evidence code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gateway.catalog import Catalog
from gateway.feedback import FeedbackStore, Shown
from gateway.learner import Evidence, Posterior
from gateway.linear_learner import Fitter
from gateway.privacy import new_session_id, session_digest
from gateway.recommendation import PER_CATEGORY_CAP, rank, select
from gateway.vocabulary import DOMAINS
from gateway.votes import examination, outcome_value

HALF_LIFE_ROUNDS = 1000.0  # the simulator's clock is the round; evidence halves every this many
REFIT_EVERY = 10  # the product refreshes its posterior at most once a second, not per request


def capped(scores: np.ndarray, rows: np.ndarray, catalog: Catalog, k: int) -> list[int]:
    """The k best rows by score, at most PER_CATEGORY_CAP per category."""
    return [int(rows[j]) for j in select(scores, catalog.category_codes[rows], k, PER_CATEGORY_CAP)]


class Learner:
    """The gateway's learner in memory: the same rank(), posterior fit and outcome values as the store."""

    def __init__(self, catalog: Catalog, blind: bool = False, shared: bool = True, decay: bool = True,
                 kind: str = "beta") -> None:  # fmt: skip
        self.catalog, self.blind = catalog, blind
        self.fit = Fitter(kind, shared)  # the product's own fitting code (gateway/linear_learner.py)
        self.evidence = Evidence.empty(catalog, 0.0, HALF_LIFE_ROUNDS if decay else None)
        self.uniform = np.full(len(catalog.labels), 1.0 / len(catalog.labels))
        self.t = 0
        self.posterior: Posterior | None = None

    def choose(self, p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        if self.posterior is None or self.t % REFIT_EVERY == 0:
            successes, failures = self.evidence.now(float(self.t))
            self.posterior = self.fit(self.catalog, successes, failures)
        q = self.uniform if self.blind else p
        return [self.catalog.index[r.item.id] for r in rank(self.catalog, q, self.posterior, [domain], k, rng)[domain]]

    def learn(self, p: np.ndarray, shown: list[int], liked: list[int], dismissed: list[int]) -> None:
        q = self.uniform if self.blind else p
        for j, row in enumerate(shown):
            outcome = "success" if j in liked else "dismissed" if j in dismissed else "shown"
            successes, failures = outcome_value(outcome, examination(j))
            self.evidence.add(row, q, successes, failures, float(self.t))
        self.t += 1


class StoreLearner:
    """EmoTorch through the real FeedbackStore on SQLite: serve-time log, likes and dismissals, the evidence log."""

    def __init__(self, catalog: Catalog, workdir: Path) -> None:
        self.catalog = catalog
        self.store = FeedbackStore(f"sqlite:///{workdir / 'sim.db'}", stats_ttl_s=0, half_life_days=None)
        self.store.start(catalog, wait_s=30)
        self.pending: tuple[str, str, list[str]] | None = None

    def choose(self, p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        ranked = rank(self.catalog, p, self.store.posterior(self.catalog), [domain], k, rng)[domain]
        digest = session_digest(new_session_id())  # every simulated user is a new session
        probabilities = dict(zip(self.catalog.labels, p.tolist(), strict=True))
        shown = [Shown(r.item.id, domain, j, r.propensity) for j, r in enumerate(ranked)]
        self.pending = (self.store.save_recommendation(probabilities, shown, digest, None), digest,
                        [r.item.id for r in ranked])  # fmt: skip
        return [self.catalog.index[r.item.id] for r in ranked]

    def learn(self, p: np.ndarray, shown: list[int], liked: list[int], dismissed: list[int]) -> None:
        assert self.pending is not None
        recommendation_id, digest, items = self.pending
        for j in liked:
            self.store.record(recommendation_id, items[j], "like", digest)
        for j in dismissed:
            self.store.record(recommendation_id, items[j], "dismiss", digest)

    def close(self) -> None:
        self.store.close()


def static_policy(catalog: Catalog) -> Callable[[np.ndarray, str, int, np.random.Generator], list[int]]:
    """The fixed emotion -> category map: the best catalog category for the predicted top emotion."""
    best: dict[tuple[str, int], list[int]] = {}
    for domain in DOMAINS:
        rows = catalog.in_domain(domain)
        codes = catalog.category_codes[rows]
        for e in range(len(catalog.labels)):
            means = {int(c): float(catalog.affinity[rows[codes == c], e].mean()) for c in np.unique(codes)}
            top = max(means, key=lambda c: means[c])
            best[(domain, e)] = [int(r) for r in rows[codes == top]]

    def choose(p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        members = best[(domain, int(np.argmax(p)))]
        return [int(r) for r in rng.permutation(members)[:k]]

    return choose


class Popularity:
    """The items with the best smoothed like rate so far in the domain, emotion ignored."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.likes = np.zeros(len(catalog.items))
        self.shown = np.zeros(len(catalog.items))

    def choose(self, p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        rows = self.catalog.in_domain(domain)
        rate = (self.likes[rows] + 0.5) / (self.shown[rows] + 5.0) + 1e-6 * rng.random(len(rows))
        return capped(rate, rows, self.catalog, k)

    def learn(self, p: np.ndarray, shown: list[int], liked: list[int], dismissed: list[int]) -> None:
        for j, row in enumerate(shown):
            self.shown[row] += examination(j)
            self.likes[row] += j in liked


def popularity_policy(catalog: Catalog) -> Popularity:
    return Popularity(catalog)
