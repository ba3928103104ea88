"""Scale benchmark of learning in the product: /v1/recommendations latency with a large feedback store.

Fills a SQLite store with `--events` feedback events (90 % impressions, 7 % likes, 3 % dismissals, on
recommendations of 25 items each, all logged as the gateway logs them: impression rows, the evidence log; 10 %
of the recommendations older than the retention period), starts a real gateway process on it (no Triton: JSON
emotions only), and measures `POST /v1/recommendations` (all five domains, k=5, `--clients` concurrent
clients) in four phases:
  idle      nothing else happening
  rebuild   while the gateway rebuilds its learned state from the whole log (admin route)
  erasure   while sessions are erased (DELETE /v1/sessions/{id}: subtracted, no rebuild)
  purge     while another process runs the retention purge over the old tenth
and the gateway's resident memory (current and peak). `--catalog-items N` serves a generated catalog of N
items instead of the embedded one (a user's own catalog), and also times loading and ranking it in-process.
`--learner` picks the learner the gateway runs (EMOTORCH_LEARNER; the default learner by default).

    python bench/feedback_scale.py --events 1000000 [--catalog-items 100000] [--learner linear] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.serving.servers import free_port  # noqa: E402
from emotorch import processes  # noqa: E402
from gateway.catalog import DEFAULT_CATALOG, Catalog, load_catalog  # noqa: E402
from gateway.feedback import FeedbackStore  # noqa: E402
from gateway.linear_learner import DEFAULT_LEARNER, LEARNERS, Fitter  # noqa: E402
from gateway.privacy import new_session_id, session_digest  # noqa: E402
from gateway.recommendation import align, rank  # noqa: E402
from gateway.vocabulary import DOMAINS  # noqa: E402
from gateway.votes import examination  # noqa: E402

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
TOKEN = "bench-admin-token"


def write_catalog(path: Path, n: int, seed: int = 0) -> None:
    """A generated catalog of n items: five domains, 40 categories each, affinities around a category pattern."""
    rng = np.random.default_rng(seed)
    lines = ["id,title,domain,category,tags,source,quality," + ",".join(LABELS)]
    patterns = rng.uniform(0.1, 0.9, size=(len(DOMAINS) * 40, len(LABELS)))
    for i in range(n):
        c = int(rng.integers(len(patterns)))
        domain = DOMAINS[c % len(DOMAINS)]
        affinity = np.clip(patterns[c] + rng.normal(0, 0.05, len(LABELS)), 0, 1)
        lines.append(f"item-{i},Item {i},{domain},cat-{c},t{c},mine,{rng.uniform():.3f},"
                     + ",".join(f"{a:.2f}" for a in affinity))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def fill(db: Path, catalog: Catalog, n_events: int, seed: int = 0) -> list[str]:
    """Write n_events events (and what the gateway logs with them) straight into SQLite; return some session ids."""
    FeedbackStore(f"sqlite:///{db}").close()  # the schema, as the gateway creates it
    rng = np.random.default_rng(seed)
    by_domain = [catalog.in_domain(d) for d in DOMAINS]
    now, old = time.time(), time.time() - 400 * 86400
    sessions = [new_session_id() for _ in range(max(n_events // 250, 1))]
    digests = [session_digest(s) for s in sessions]
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    recs, shown, events, evidence = [], [], [], []
    for r in range(max(n_events // 25, 1)):
        rec_id, t = str(uuid.uuid4()), (old if r % 10 == 5 else now - float(rng.uniform(0, 30 * 86400)))
        p = np.zeros(len(LABELS))
        p[int(rng.integers(len(LABELS)))] = 1.0
        probs = json.dumps(dict(zip(LABELS, p.round(1).tolist(), strict=True)))
        recs.append((rec_id, t, digests[r % len(digests)], probs, None, True))
        for d, rows in enumerate(by_domain):
            for position, row in enumerate(rng.choice(rows, size=5, replace=False)):
                item = catalog.items[int(row)].id
                kind = ("impression", "like", "dismiss")[int(rng.choice(3, p=[0.9, 0.07, 0.03]))]
                shown.append((rec_id, item, DOMAINS[d], position, 0.5, examination(position), "shown", False))
                events.append((rec_id, item, kind, t, kind != "impression"))
                evidence.append((rec_id, item, t, probs, float(kind == "like"),
                                 examination(position) if kind == "impression" else float(kind == "dismiss")))
        if len(events) >= 50_000:
            _flush(con, recs, shown, events, evidence)
    _flush(con, recs, shown, events, evidence)
    con.close()
    return sessions


def _flush(con: sqlite3.Connection, *batches: list[tuple[Any, ...]]) -> None:
    recs, shown, events, evidence = batches
    with con:
        con.executemany("INSERT INTO recommendations (id, created_at, session_id, probabilities, model_version, "
                        "counted) VALUES (?,?,?,?,?,?)", recs)  # fmt: skip
        con.executemany("INSERT INTO recommended_items (recommendation_id, item_id, domain, position, propensity, "
                        "miss_weight, outcome, vote_counted) VALUES (?,?,?,?,?,?,?,?)", shown)  # fmt: skip
        con.executemany("INSERT INTO events (recommendation_id, item_id, event, created_at, counted) "
                        "VALUES (?,?,?,?,?)", events)  # fmt: skip
        con.executemany("INSERT INTO evidence (recommendation_id, item_id, served_at, probabilities, successes, "
                        "failures) VALUES (?,?,?,?,?,?)", evidence)  # fmt: skip
    for batch in batches:
        batch.clear()


@contextlib.contextmanager
def gateway(db: Path, catalog_path: Path, workdir: Path, learner: str) -> Iterator[tuple[str, int]]:
    """A real gateway process on the store (no Triton); stopped on the way out."""
    port = free_port()
    env = {**os.environ, "EMOTORCH_DATABASE_URL": f"sqlite:///{db}", "EMOTORCH_MODEL_WAIT_S": "0",
           "EMOTORCH_TRITON_URL": f"127.0.0.1:{free_port()}", "EMOTORCH_RATE_LIMIT_PER_S": "0",
           "EMOTORCH_ADMIN_TOKEN": TOKEN, "EMOTORCH_CATALOG_PATH": str(catalog_path),
           "EMOTORCH_FEEDBACK_RETENTION_DAYS": "1000",  # the purge phase runs the 365-day purge itself
           "EMOTORCH_LEARNER": learner}  # fmt: skip
    with (workdir / "gateway.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "emotorch.cli", "gateway", "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "gateway.log").read_text()[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        processes.stop(process, timeout_s=20)


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load(url: str, clients: int, until: Callable[[], bool], minimum: int) -> list[float]:
    """Latencies (s) of JSON recommendations from `clients` threads until `until()` and at least `minimum` each."""
    latencies: list[float] = []
    moods = list(LABELS)

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            n = 0
            while n < minimum or not until():
                started = time.perf_counter()
                response = http.post("/v1/recommendations", json={"emotion": moods[(i + n) % 7], "k": 5})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def during(url: str, clients: int, minimum: int, work: Callable[[], Any]) -> tuple[list[float], Any, float]:
    """Latencies while `work` runs in another thread, its result and its duration."""
    done, result, started = threading.Event(), [], time.perf_counter()

    def run() -> None:
        try:
            result.append(work())
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    latencies = load(url, clients, done.is_set, minimum)
    worker.join()
    return latencies, (result[0] if result else None), time.perf_counter() - started


def in_process(catalog: Catalog, requests: int, learner: str) -> dict[str, float]:
    """Milliseconds to fit the posterior (whole: the linear learner's shared part too) and to rank all five
    domains, in the gateway's own code."""
    zeros = np.zeros_like(catalog.affinity)
    fit = Fitter(learner)
    if fit.kind == "linear":
        fit.features(catalog)  # once per catalog (the Fitter caches them), not part of a fit: kept out of fit_ms
    started = time.perf_counter()
    posterior = fit(catalog, zeros, zeros)
    fit_ms = (time.perf_counter() - started) * 1000
    rng, times = np.random.default_rng(0), []
    for i in range(requests):
        p = align({LABELS[i % 7]: 1.0}, catalog.labels)
        started = time.perf_counter()
        rank(catalog, p, posterior, list(DOMAINS), 5, rng)
        times.append((time.perf_counter() - started) * 1000)
    return {"fit_ms": fit_ms, "rank_p50_ms": float(np.percentile(times, 50)),
            "rank_p99_ms": float(np.percentile(times, 99))}  # fmt: skip


def run(events: int, catalog_items: int | None, clients: int, minimum: int, workdir: Path,
        learner: str = DEFAULT_LEARNER) -> dict[str, Any]:  # fmt: skip
    """Fill, serve, measure every phase; return the figures."""
    figures: dict[str, Any] = {"events": events, "clients": clients, "learner": learner}
    catalog_path = DEFAULT_CATALOG
    if catalog_items:
        catalog_path = workdir / "catalog.csv"
        write_catalog(catalog_path, catalog_items)
    started = time.perf_counter()
    catalog = load_catalog(catalog_path)
    figures["catalog"] = {"items": len(catalog.items), "load_s": time.perf_counter() - started,
                          **in_process(catalog, max(minimum, 20), learner)}  # fmt: skip
    db = workdir / "feedback.db"
    started = time.perf_counter()
    sessions = fill(db, catalog, events)
    figures["fill_s"], figures["db_mib"] = time.perf_counter() - started, db.stat().st_size / 2**20
    with gateway(db, catalog_path, workdir, learner) as (url, pid):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        first, _, first_s = during(url, 1, 1, lambda: httpx.post(f"{url}/v1/admin/learned-state/rebuild",
                                                                  headers=headers, timeout=600).json())  # fmt: skip
        phases: dict[str, Any] = {"idle": (load(url, clients, lambda: True, minimum), None, 0.0)}
        phases["rebuild"] = during(url, clients, minimum, lambda: httpx.post(
            f"{url}/v1/admin/learned-state/rebuild", headers=headers, timeout=600).json())  # fmt: skip
        erased = min(20, len(sessions) // 4)
        phases["erasure"] = during(url, clients, minimum, lambda: [
            httpx.delete(f"{url}/v1/sessions/{s}", timeout=60).status_code for s in sessions[:erased]])  # fmt: skip
        store = FeedbackStore(f"sqlite:///{db}")
        phases["purge"] = during(url, clients, minimum, lambda: store.purge(365 * 86400.0))
        store.close()
        rss, peak = memory_mib(pid)
    figures["memory_mib"] = {"rss": rss, "peak": peak}
    figures["phases"] = {name: {"requests": len(lat), "p50_ms": 1000 * float(np.percentile(lat, 50)),
                                "p99_ms": 1000 * float(np.percentile(lat, 99)), "max_ms": 1000 * max(lat),
                                "work_s": work_s, "result": result if name != "erasure" else len(result)}
                         for name, (lat, result, work_s) in phases.items()}  # fmt: skip
    return figures


def table(f: dict[str, Any]) -> list[str]:
    c = f["catalog"]
    lines = [f"Feedback store: {f['events']:,} events ({f['db_mib']:.0f} MiB SQLite, filled in {f['fill_s']:.0f} s), "
             f"catalog of {c['items']:,} items (loaded in {c['load_s']:.2f} s; in-process fit {c['fit_ms']:.0f} ms, "
             f"rank of 5 domains p50 {c['rank_p50_ms']:.1f} ms, p99 {c['rank_p99_ms']:.1f} ms), {f['clients']} "
             f"clients, learner '{f['learner']}'", "",
             "| phase | requests | p50 ms | p99 ms | max ms | p99 / idle p99 | the work alongside |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    idle = f["phases"]["idle"]["p99_ms"]
    for name, p in f["phases"].items():
        work = _work(name, p)
        lines.append(f"| {name} | {p['requests']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} | "
                     f"{p['p99_ms'] / idle:.2f}x | {work} |")
    m = f["memory_mib"]
    lines.append(f"\nGateway memory after all phases: {m['rss']:.0f} MiB resident, peak {m['peak']:.0f} MiB")
    return lines


def _work(name: str, p: dict[str, Any]) -> str:
    if name == "rebuild":
        return f"full rebuild of {p['result']['rows']:,} log rows, {p['work_s']:.1f} s"
    if name == "erasure":
        return f"{p['result']} sessions erased, {p['work_s']:.2f} s"
    if name == "purge":
        return f"retention purge of {p['result']:,} recommendations, {p['work_s']:.1f} s"
    return "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--catalog-items", type=int, default=None, help="a generated catalog of this many items")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200, help="at least this many requests per client and phase")
    parser.add_argument("--learner", choices=LEARNERS, default=DEFAULT_LEARNER, help="the gateway's EMOTORCH_LEARNER")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.events < 25 or args.clients < 1 or args.requests < 1:
        parser.error("--events must be at least 25, --clients and --requests at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args.events, args.catalog_items, args.clients, args.requests, Path(tmp), args.learner)
    print("\n".join(table(figures)))  # noqa: T201 - a benchmark prints its table
    if args.json:
        args.json.write_text(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
