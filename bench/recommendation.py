"""Offline evaluation of the recommendation policy on simulated users, in one seeded run.

Each round a user arrives with a true emotion (drawn from FER2013's class mix), the classifier reports a noisy
probability vector for it (~65 % top-1 accuracy, like a real FER model), a domain is picked, and each policy
shows k items. The user clicks each shown item with a hidden click-through rate that depends on the item and
the true emotion: the catalog's prior affinity is informative but only half of the hidden taste; the rest is
item quality the catalog does not record and some idiosyncratic (item, emotion) surprise.

Policies, all given the same users:
  random   k random items of the domain
  static   the fixed emotion -> category map of public emotion recommenders: items of the catalog category
           with the highest affinity for the predicted top emotion, at random within it
  emotorch the gateway's own ranking (gateway.recommendation.rank: Thompson sampling over Beta posteriors,
           probability-vector context, category caps), learning from its clicks exactly as the feedback store
           attributes them

Regret is measured per round against an oracle that knows the hidden click-through rates but sees only the
same noisy probability vector and obeys the same diversity cap: the best any policy could do with that
information. Cumulative regret that flattens (sublinear) means the policy is learning.

    python bench/recommendation.py --rounds 5000 --seed 0 [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from gateway.catalog import DEFAULT_CATALOG, DOMAINS, Catalog, load_catalog  # noqa: E402
from gateway.recommendation import PER_CATEGORY_CAP, FeedbackStats, rank  # noqa: E402

# FER2013's class mix (train split): angry, disgust, fear, happy, neutral, sad, surprise.
EMOTION_MIX = np.array([3995, 436, 4097, 7215, 4965, 4830, 3171], dtype=np.float64)


@dataclass(frozen=True)
class World:
    catalog: Catalog
    ctr: np.ndarray  # items x emotions, hidden click-through rates


def make_world(catalog: Catalog, rng: np.random.Generator) -> World:
    """Hidden taste = half the catalog's emotion fit, 30 % item quality the catalog does not know (some songs
    are simply better), 20 % idiosyncratic (item, emotion) surprise; sharpened into click-through rates."""
    quality = rng.uniform(0.0, 1.0, size=(len(catalog.items), 1))
    surprise = rng.uniform(0.0, 1.0, size=catalog.affinity.shape)
    taste = 0.5 * catalog.affinity + 0.3 * quality + 0.2 * surprise
    return World(catalog, 0.01 + 0.35 * taste**4)


def noisy_prediction(true_emotion: int, n: int, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(0.0, 1.0, n)
    logits[true_emotion] += 1.9
    e = np.exp(logits - logits.max())
    return np.asarray(e / e.sum())


def capped_top(order: np.ndarray, catalog: Catalog, k: int) -> list[int]:
    chosen: list[int] = []
    per_category: dict[str, int] = {}
    for i in order:
        category = catalog.items[i].category
        if per_category.get(category, 0) < PER_CATEGORY_CAP:
            per_category[category] = per_category.get(category, 0) + 1
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return chosen


Policy = Callable[[np.ndarray, str, int, np.random.Generator], list[int]]


@dataclass
class Result:
    clicks: int = 0
    impressions: int = 0
    regret: list[float] = field(default_factory=list)  # cumulative, per round
    clicks_per_round: list[int] = field(default_factory=list)

    def window_ctr(self, rounds: int, k: int) -> float:
        """CTR over the last `rounds` rounds: what the policy does once it has learned."""
        return sum(self.clicks_per_round[-rounds:]) / max(len(self.clicks_per_round[-rounds:]) * k, 1)

    @property
    def ctr(self) -> float:
        return self.clicks / max(self.impressions, 1)


def simulate(rounds: int, k: int, seed: int) -> tuple[dict[str, Result], float]:
    catalog = load_catalog(DEFAULT_CATALOG)
    world_rng = np.random.default_rng(seed)
    world = make_world(catalog, world_rng)
    by_domain = {d: np.array(catalog.in_domain(d)) for d in DOMAINS}
    stats = FeedbackStats.empty(catalog)
    best_category: dict[tuple[str, int], list[int]] = {}
    for d, members in by_domain.items():
        for e in range(len(catalog.labels)):
            categories = sorted({catalog.items[i].category for i in members},
                                key=lambda c: -np.mean([catalog.affinity[i, e] for i in members
                                                        if catalog.items[i].category == c]))  # fmt: skip
            best_category[(d, e)] = [int(i) for c in categories for i in members if catalog.items[i].category == c]

    def random_policy(p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        return [int(i) for i in rng.choice(by_domain[domain], size=k, replace=False)]

    def static_policy(p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        ranked = best_category[(domain, int(np.argmax(p)))]
        first = [i for i in ranked if catalog.items[i].category == catalog.items[ranked[0]].category]
        rest = [i for i in ranked if i not in first]
        return [int(i) for i in rng.permutation(first)[:k]] + rest[: max(0, k - len(first))]

    def emotorch_policy(p: np.ndarray, domain: str, k: int, rng: np.random.Generator) -> list[int]:
        return [catalog.index[r.item.id] for r in rank(catalog, p, stats, [domain], k, rng)[domain]]

    policies: dict[str, Policy] = {"random": random_policy, "static": static_policy, "emotorch": emotorch_policy}
    results = {name: Result() for name in policies}
    policy_rngs = {name: np.random.default_rng([seed, i]) for i, name in enumerate(policies)}
    click_rng = np.random.default_rng([seed, 99])
    user_rng = np.random.default_rng([seed, 7])
    mix = EMOTION_MIX / EMOTION_MIX.sum()
    started = time.perf_counter()
    for _ in range(rounds):
        true_emotion = int(user_rng.choice(len(mix), p=mix))
        p = noisy_prediction(true_emotion, len(mix), user_rng)
        domain = DOMAINS[int(user_rng.integers(len(DOMAINS)))]
        members = by_domain[domain]
        oracle = capped_top(members[np.argsort(-(world.ctr[members] @ p))], catalog, k)
        best = world.ctr[oracle, true_emotion].sum()
        uniforms = click_rng.random(k)  # the same luck for every policy
        for name, policy in policies.items():
            shown = policy(p, domain, k, policy_rngs[name])
            rates = world.ctr[shown, true_emotion]
            clicks = uniforms[: len(shown)] < rates
            result = results[name]
            result.clicks += int(clicks.sum())
            result.clicks_per_round.append(int(clicks.sum()))
            result.impressions += len(shown)
            result.regret.append((result.regret[-1] if result.regret else 0.0) + best - float(rates.sum()))
            if name == "emotorch":
                for row, clicked in zip(shown, clicks, strict=True):
                    stats.add(row, p, float(clicked), float(not clicked))
    return results, time.perf_counter() - started


def summary(results: dict[str, Result], rounds: int) -> dict[str, dict[str, object]]:
    window = max(rounds // 5, 1)
    out: dict[str, dict[str, object]] = {}
    for name, r in results.items():
        first = r.regret[window - 1]
        last = r.regret[-1] - r.regret[-window - 1] if rounds > window else r.regret[-1]
        out[name] = {
            "ctr": r.ctr,
            "clicks": r.clicks,
            "impressions": r.impressions,
            "regret": r.regret,
            "regret_first_window": first,
            "regret_last_window": last,
            "ctr_last_window": r.window_ctr(window, r.impressions // max(rounds, 1)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--k", type=int, default=5, help="items shown per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results, seconds = simulate(args.rounds, args.k, args.seed)
    figures = summary(results, args.rounds)
    window = max(args.rounds // 5, 1)
    static_ctr = results["static"].ctr
    lines = [
        f"Recommendation policies on {args.rounds} simulated users (k={args.k}, seed={args.seed}, {seconds:.1f} s)",
        "",
        f"| policy | CTR | CTR vs static | CTR, last {window} rounds | vs static | cumulative regret | "
        f"regret, first {window} rounds | regret, last {window} rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    static_last = float(figures["static"]["ctr_last_window"])  # type: ignore[arg-type]
    for name, f in figures.items():
        last_ctr = float(f["ctr_last_window"])  # type: ignore[arg-type]
        lines.append(
            f"| {name} | {f['ctr']:.4f} | {results[name].ctr / static_ctr:.2f}x | {last_ctr:.4f} | "
            f"{last_ctr / static_last:.2f}x | {results[name].regret[-1]:.1f} | "
            f"{f['regret_first_window']:.1f} | {f['regret_last_window']:.1f} |"
        )
    print("\n".join(lines))  # noqa: T201 - a benchmark prints its table
    if args.json:
        payload = {"rounds": args.rounds, "k": args.k, "seed": args.seed, "policies": figures}
        args.json.write_text(json.dumps(payload) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
