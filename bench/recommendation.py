"""Offline evaluation of recommendation policies on simulated users whose tastes the policies do not know.

The hidden world is not built from the policy's prior. Each item's hidden appeal under emotion e is
    taste = sqrt(mood_share) * mood_effect[i, e] + sqrt(1 - mood_share) * quality[i]
(both standardised): `mood_share` is how much of taste the mood explains (0: mood is irrelevant). The mood
effect is a per-(category, emotion) pattern plus a per-item deviation, correlated only PRIOR_CORRELATION with
the catalog's affinities (the catalog is a weak guess); quality is independent of the catalog's quality prior.
Click (like) probability = 0.01 + 0.3 * sigmoid(1.5 * taste - 2). With `--drift`, half-way through the run
the mood effects are redrawn (tastes change).

A user arrives with a true emotion (FER2013's class mix); the classifier reports calibrated probabilities
with top-1 accuracy `accuracy`. The user looks at the list with probability 0.8, at position p with
probability 0.9**p, likes what she looks at with its hidden probability and dismisses 10 % of what she looked
at and did not like. Like a real client, she sends only likes and dismissals; the server logs the rest.

Policies, on the same users and the same luck:
  emotorch     the gateway's default learner (gateway.linear_learner.DEFAULT_LEARNER) and ranking
               (gateway.recommendation.rank over its posterior), learning from the evidence gateway/votes.py
               defines: serve-time misses weighted by position, likes, dismissals; evidence decays
               (HALF_LIFE_ROUNDS); `--store` runs it through the real FeedbackStore on SQLite instead of in
               memory (the product's code path, HTTP aside)
  blind        the same learner without the emotion (a uniform vector for ranking and for credit)
  beta|linear  the other learner the setting EMOTORCH_LEARNER can select, and its blind twin ("-blind"):
               beta is gateway/learner.py (Beta per item and emotion under a Gamma per category), linear is
               gateway/linear_learner.py (emotion x features regression plus item quality residual)
  item-only    the beta learner without the category level (no sharing between items) [first world only]
  no-decay     emotorch without decay                                                  [first world only]
  static       the fixed emotion -> category map: items of the catalog category with the highest affinity
               for the predicted top emotion, at random within it
  popularity   the items with the best smoothed like rate so far, emotion ignored
  oracle       knows the hidden rates, sees the same probability vector, obeys the same diversity cap

    python bench/recommendation.py [--rounds 2000] [--seed 0] [--seeds 1] [--grid] [--store] [--jobs 2]
                                   [--json out.json]

Worlds run in `--jobs` processes (each world is independent and seeded, so the figures do not depend on it). With
`--seeds N` every world runs N times on seeds seed..seed+N-1 (a new hidden world, users and luck each time); the
table and the gate use the totals pooled over the seeds, and the gate lines say in how many seeds the learner
passed on that seed's run alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# One BLAS thread: the linear learner's small solves run ~4x slower when two threads fight other work for 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.policies import Learner, StoreLearner, capped, popularity_policy, static_policy  # noqa: E402
from gateway.catalog import DEFAULT_CATALOG, Catalog, load_catalog  # noqa: E402
from gateway.linear_learner import DEFAULT_LEARNER, LEARNERS  # noqa: E402
from gateway.vocabulary import DOMAINS  # noqa: E402

OTHER_LEARNER = next(kind for kind in LEARNERS if kind != DEFAULT_LEARNER)

EMOTION_MIX = np.array([3995, 436, 4097, 7215, 4965, 4830, 3171], dtype=np.float64)  # FER2013 train split
EMOTION_PRIOR = EMOTION_MIX / EMOTION_MIX.sum()
PRIOR_CORRELATION = 0.3
MOOD_SHARES = (0.0, 0.25, 0.5, 0.8)
ACCURACIES = (0.4, 0.73, 0.9)
K = 5
Totals = tuple[int, int, int, int]  # likes, items shown, likes in the last third, shown in the last third


@dataclass(frozen=True)
class World:
    mood_share: float
    accuracy: float
    drift: bool = False


def evidence_for_accuracy(accuracy: float, n: int = 7, draws: int = 20_000) -> float:
    """The logit gap that makes the calibrated classifier right `accuracy` of the time at top-1 (bisection)."""
    rng = np.random.default_rng(123)
    truth = rng.choice(n, p=EMOTION_PRIOR, size=draws)
    noise = rng.normal(size=(draws, n))
    lo, hi = 0.0, 6.0
    for _ in range(30):
        mid = (lo + hi) / 2
        logits = noise + mid * np.eye(n)[truth]
        correct = (np.argmax(np.log(EMOTION_PRIOR) + mid * logits, axis=1) == truth).mean()
        lo, hi = (mid, hi) if correct < accuracy else (lo, mid)
    return (lo + hi) / 2


def predict(true_emotion: int, gap: float, rng: np.random.Generator) -> np.ndarray:
    """Calibrated probabilities: the posterior of the class given logits ~ N(gap * onehot(true), I)."""
    logits = rng.normal(size=len(EMOTION_PRIOR))
    logits[true_emotion] += gap
    e = EMOTION_PRIOR * np.exp(gap * (logits - logits.max()))
    return np.asarray(e / e.sum())


def hidden_rates(catalog: Catalog, mood_share: float, rng: np.random.Generator) -> np.ndarray:
    """Items x emotions like probabilities (see the module docstring)."""
    n, labels = catalog.affinity.shape
    codes = catalog.category_codes
    pattern = rng.normal(size=(int(codes.max()) + 1, labels))[codes] + 0.5 * rng.normal(size=(n, labels))
    guess = (catalog.affinity - catalog.affinity.mean()) / max(float(catalog.affinity.std()), 1e-9)
    mood = PRIOR_CORRELATION * guess + np.sqrt(1 - PRIOR_CORRELATION**2) * _standard(pattern)
    quality = rng.normal(size=(n, 1))
    taste = np.sqrt(mood_share) * _standard(mood) + np.sqrt(1 - mood_share) * quality
    return np.asarray(0.01 + 0.3 / (1.0 + np.exp(-(1.5 * taste - 2.0))))


def _standard(x: np.ndarray) -> np.ndarray:
    return np.asarray((x - x.mean()) / max(float(x.std()), 1e-9))


def react(rates: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(liked positions, dismissed positions) of one user's look at a list with these hidden rates."""
    if rng.random() >= 0.8:
        return [], []
    looked = rng.random(len(rates)) < 0.9 ** np.arange(len(rates))
    liked = looked & (rng.random(len(rates)) < rates)
    dismissed = looked & ~liked & (rng.random(len(rates)) < 0.1)
    return [int(j) for j in np.flatnonzero(liked)], [int(j) for j in np.flatnonzero(dismissed)]


def simulate(catalog: Catalog, world: World, rounds: int, seed: int, variants: bool = False,
             store_dir: Path | None = None) -> dict[str, Totals]:  # fmt: skip
    """(likes, items shown, likes in the last third, shown in the last third) per policy."""
    world_rng = np.random.default_rng([seed, 1])
    rates = hidden_rates(catalog, world.mood_share, world_rng)
    gap = evidence_for_accuracy(world.accuracy)
    learners: dict[str, object] = {
        "emotorch": Learner(catalog, kind=DEFAULT_LEARNER), "blind": Learner(catalog, blind=True, kind=DEFAULT_LEARNER),
        OTHER_LEARNER: Learner(catalog, kind=OTHER_LEARNER),
        f"{OTHER_LEARNER}-blind": Learner(catalog, blind=True, kind=OTHER_LEARNER),
        "popularity": popularity_policy(catalog)}  # fmt: skip
    if variants:
        learners |= {"item-only": Learner(catalog, shared=False, kind="beta"),
                     "no-decay": Learner(catalog, decay=False, kind=DEFAULT_LEARNER)}  # fmt: skip
    if store_dir is not None:
        learners["emotorch (store)"] = StoreLearner(catalog, store_dir)
    static = static_policy(catalog)
    names = [*learners, "static", "oracle"]
    totals = {name: [0, 0, 0, 0] for name in names}
    rngs = {name: np.random.default_rng([seed, 2, _stream(name)]) for name in names}
    user_rng = np.random.default_rng([seed, 3])
    for t in range(rounds):
        if world.drift and t == rounds // 2:
            rates = hidden_rates(catalog, world.mood_share, np.random.default_rng([seed, 4]))
        truth = int(user_rng.choice(len(EMOTION_PRIOR), p=EMOTION_PRIOR))
        p = predict(truth, gap, user_rng)
        domain = DOMAINS[int(user_rng.integers(len(DOMAINS)))]
        rows = catalog.in_domain(domain)
        luck = np.random.default_rng([seed, 5, t])  # the same user reaction draws for every policy
        state = luck.bit_generator.state
        for name in names:
            if name == "static":
                shown = static(p, domain, K, rngs[name])
            elif name == "oracle":
                shown = capped(rates[rows] @ p, rows, catalog, K)
            else:
                shown = learners[name].choose(p, domain, K, rngs[name])  # type: ignore[attr-defined]
            luck.bit_generator.state = state
            liked, dismissed = react(rates[shown, truth], luck)
            if name in learners:
                learners[name].learn(p, shown, liked, dismissed)  # type: ignore[attr-defined]
            total = totals[name]
            total[0] += len(liked)
            total[1] += len(shown)
            if t >= rounds - rounds // 3:
                total[2] += len(liked)
                total[3] += len(shown)
    for learner in learners.values():
        if isinstance(learner, StoreLearner):
            learner.close()
    return {name: (t[0], t[1], t[2], t[3]) for name, t in totals.items()}


def _stream(name: str) -> int:
    """A policy's random stream, named by what it is (a learner's kind, not whether it is the default, so a
    learner's figures do not change with the setting's default). A learner and its blind twin share one (common
    random numbers: the same Thompson draws), so the gate compares the emotion's effect, not two kinds of luck."""
    kind = {"emotorch": DEFAULT_LEARNER, "blind": DEFAULT_LEARNER, "no-decay": f"{DEFAULT_LEARNER}-no-decay",
            "emotorch (store)": f"{DEFAULT_LEARNER}-store"}.get(name, name.removesuffix("-blind"))  # fmt: skip
    return zlib.crc32(kind.encode())


def cells(grid: bool) -> list[World]:
    """The worlds to run: the default one, or the whole grid (mood share x accuracy, and drift)."""
    if not grid:
        return [World(0.5, 0.73)]
    default = World(0.5, 0.73)  # first: the variants (item-only, no-decay) and --store run on it
    worlds = [World(m, a) for m in MOOD_SHARES for a in ACCURACIES] + [World(m, 0.73, True) for m in (0.25, 0.5, 0.8)]
    return [default, *(w for w in worlds if w != default)]


def per_100(likes: int, shown: int) -> float:
    return 100.0 * likes / max(shown, 1)


def table(results: list[tuple[World, dict[str, Totals]]]) -> list[str]:
    """One row per world: likes per 100 items shown (whole run / last third) per policy, and the gate."""
    names = list(results[0][1])
    lines = ["| mood share | accuracy | drift | " + " | ".join(names) + " | gate |",
             "|---|---|---|" + "---|" * (len(names) + 1)]  # fmt: skip
    for world, r in results:
        row = [f"{per_100(r[n][0], r[n][1]):.2f} / {per_100(r[n][2], r[n][3]):.2f}" for n in names]
        lines.append(f"| {world.mood_share:.0%} | {world.accuracy:.0%} | {'yes' if world.drift else 'no'} | "
                     + " | ".join(row) + f" | {gate(world, r)} |")  # fmt: skip
    return lines


def gate(world: World, r: dict[str, Totals], learner: str = "emotorch") -> str:
    """Never worse than the emotion-blind learner where mood matters, never worse than static where it does not.

    `learner` is judged against its own blind twin ("blind" for "emotorch", "<name>-blind" otherwise). 'Worse' is
    judged on the whole run with a tolerance of two binomial standard errors (the runs are short).
    """
    emo = r[learner][0] / r[learner][1]
    other = ("blind" if learner == "emotorch" else f"{learner}-blind") if world.mood_share > 0 else "static"
    ref = r[other][0] / r[other][1]
    tolerance = 2 * np.sqrt(max(ref * (1 - ref), 1e-9) / r[other][1])
    label = "blind" if other.endswith("blind") else other
    return f"{'PASS' if emo >= ref - tolerance else 'FAIL'} ({emo / max(ref, 1e-9):.2f}x {label})"


def gate_lines(results: list[tuple[World, dict[str, Totals]]],
               per_seed: list[tuple[World, list[dict[str, Totals]]]] | None = None) -> list[str]:  # fmt: skip
    """The gate, spelled out per world for the default learner, and for the other one beside it; with several
    seeds, on the pooled totals, with the number of seeds whose own run passes."""
    lines = [f"Gate (never worse than the emotion-blind learner where mood matters, never worse than static where "
             f"it does not), default learner '{DEFAULT_LEARNER}' (emotorch) and '{OTHER_LEARNER}':"]  # fmt: skip
    for i, (world, r) in enumerate(results):
        where = f"mood {world.mood_share:.0%}, accuracy {world.accuracy:.0%}{', drift' if world.drift else ''}"
        mine, other = gate(world, r), gate(world, r, OTHER_LEARNER)
        if per_seed is not None:
            runs = per_seed[i][1]
            mine, other = f"{mine}, {seed_passes(world, runs)}", f"{other}, {seed_passes(world, runs, OTHER_LEARNER)}"
        lines.append(f"  {where}: {DEFAULT_LEARNER} {mine}; {OTHER_LEARNER} {other}")
    failed = [w for w, r in results if gate(w, r).startswith("FAIL")]
    lines.append(f"  default learner: {'PASS in every world' if not failed else f'FAIL in {len(failed)} world(s)'}")
    return lines


@functools.cache
def _catalog() -> Catalog:
    """The default catalog, loaded once per process (a worker loads its own: nothing large crosses the pipe)."""
    return load_catalog(DEFAULT_CATALOG)


def _run_world(world: World, rounds: int, seed: int, first: bool, store_dir: Path | None) -> dict[str, Totals]:
    return simulate(_catalog(), world, rounds, seed, variants=first, store_dir=store_dir)


def run_grid(worlds: list[World], rounds: int, seed: int, store: bool, jobs: int,
             seeds: int = 1) -> list[tuple[World, dict[str, Totals]]]:  # fmt: skip
    """Every world's totals, summed over `seeds` seeds (seed, seed + 1, ...), in the order given."""
    return [(world, pooled(runs)) for world, runs in run_seeds(worlds, rounds, seed, store, jobs, seeds)]


def run_seeds(worlds: list[World], rounds: int, seed: int, store: bool, jobs: int,
              seeds: int = 1) -> list[tuple[World, list[dict[str, Totals]]]]:  # fmt: skip
    """Every world's totals for each seed. Each seed draws its own hidden world, users and luck; the first world
    also runs the variants (and the store path) on every seed.

    Workers are spawned, not forked: a fork of a process whose BLAS threads are running can spin forever."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(world, rounds, seed + k, i == 0, Path(tmp) / f"seed{k}" if store and i == 0 else None)
                for i, world in enumerate(worlds) for k in range(seeds)]  # fmt: skip
        for run in runs:
            if run[4] is not None:
                run[4].mkdir()
        if jobs <= 1:
            totals = [_run_world(*run) for run in runs]
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                totals = [future.result() for future in [pool.submit(_run_world, *run) for run in runs]]
    return [(world, totals[i * seeds : (i + 1) * seeds]) for i, world in enumerate(worlds)]


def pooled(runs: list[dict[str, Totals]]) -> dict[str, Totals]:
    """Totals summed over seeds (every run of a world has the same policies)."""
    return {name: tuple(int(sum(run[name][j] for run in runs)) for j in range(4)) for name in runs[0]}  # type: ignore[misc]


def seed_passes(world: World, runs: list[dict[str, Totals]], learner: str = "emotorch") -> str:
    """In how many of the seeds the learner passes its gate on that seed's run alone."""
    return f"{sum(gate(world, run, learner).startswith('PASS') for run in runs)}/{len(runs)} seeds"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="run every world with this many seeds (seed, seed + 1, ...) and judge the pooled totals")
    parser.add_argument("--grid", action="store_true", help="every world: mood share x accuracy, and drift")
    parser.add_argument("--store", action="store_true", help="also run EmoTorch through the real FeedbackStore")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one world each at a time)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rounds < 30:
        parser.error("--rounds must be at least 30")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    started = time.perf_counter()
    per_seed = run_seeds(cells(args.grid), args.rounds, args.seed, args.store, args.jobs, args.seeds)
    results = [(world, pooled(runs)) for world, runs in per_seed]
    seconds = time.perf_counter() - started
    which = f"seed {args.seed}" if args.seeds == 1 else f"seeds {args.seed}-{args.seed + args.seeds - 1}, pooled"
    out = [f"Likes per 100 items shown (whole run / last third), {args.rounds} rounds, k={K}, {which} "
           f"({seconds:.0f} s)", ""]  # fmt: skip
    if len(results) > 1:
        main_names = ("emotorch", "blind", OTHER_LEARNER, f"{OTHER_LEARNER}-blind", "static", "popularity", "oracle")
        out += ["Default world, every policy:", *table(results[:1]), "", "Every world:",
                *table([(w, {n: r[n] for n in main_names}) for w, r in results])]  # fmt: skip
    else:
        out += table(results)
    out += ["", *gate_lines(results, per_seed if args.seeds > 1 else None)]
    print("\n".join(out))  # noqa: T201 - a benchmark prints its table
    if args.json:
        keys = ("likes", "shown", "likes_last_third", "shown_last_third")
        payload = [{"mood_share": w.mood_share, "accuracy": w.accuracy, "drift": w.drift, "learner": DEFAULT_LEARNER,
                    "gate": gate(w, r), "gate_other": gate(w, r, OTHER_LEARNER),
                    "seed_passes": seed_passes(w, runs), "seed_passes_other": seed_passes(w, runs, OTHER_LEARNER),
                    "policies": {n: dict(zip(keys, v, strict=True)) for n, v in r.items()},
                    "per_seed": [{n: dict(zip(keys, v, strict=True)) for n, v in run.items()} for run in runs]}
                   for (w, r), (_, runs) in zip(results, per_seed, strict=True)]  # fmt: skip
        args.json.write_text(json.dumps({"rounds": args.rounds, "seed": args.seed, "seeds": args.seeds,
                                         "worlds": payload}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
