"""The learned state of one gateway process: kept incrementally from the evidence log, rebuilt in the background.

Every change to what feedback has taught is a row of the append-only `evidence` table: a served recommendation
adds each counted item's position-weighted miss, a like turns that miss into a success, an erased session
adds negated copies of its rows. A request never reads the whole history: it takes the current posterior; only
right after this process wrote does it apply the rows after the last one seen itself, at most INLINE_BATCH of
them (so it ranks with its own writes). Everything else (others' writes, a purge's or an erasure's negated rows,
the linear learner's shared refit) is followed by the background thread at least once per `refresh_ttl_s`, in
CHUNK-row steps that hold the lock briefly. Full rebuilds (at start, on a catalog change, every FULL_REBUILD_S, or
after a gap long enough that compacted rows might have been missed) run in a background thread that streams
the log in chunks (bounded memory) and swaps the result in; requests keep using the previous state meanwhile.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, Select, create_engine, delete, func, select

from gateway.catalog import Catalog
from gateway.feedback_schema import evidence
from gateway.learner import Evidence, Posterior
from gateway.linear_learner import DEFAULT_LEARNER, Fitter

logger = logging.getLogger(__name__)

# On PostgreSQL several writers can commit ids out of order, so a row with a lower id than one already read
# may become visible later; the incremental refresh would miss it, the periodic rebuild picks it up.
FULL_REBUILD_S = 300.0
COMPACT_AFTER_S = 600.0  # cancelled rows of erased sessions are deleted this long after the erasure
REFRESH_BATCH = 20_000
CHUNK = 5_000
FOLLOW_CHUNK = 2_000  # log rows the background thread applies per step when following others' writes
FOLLOW_PAUSE = 1.0  # seconds of pause per second of following work: requests share the interpreter lock
REBUILD_PAUSE = 2.0  # seconds of pause per second of rebuild work, when the rebuild runs in this process
IN_PROCESS_MAX_ROWS = 50_000  # a longer log is rebuilt in a child process
INLINE_BATCH = 1_000  # log rows a request applies itself (to see its own writes); the background reads the rest
DIRTY_WAIT_S = 2.0  # how long a request that wrote waits for a refresh in progress
SHARED_REFIT_S = 30.0


class LearnedState:
    """The posterior this process ranks with; thread-safe."""

    def __init__(self, engine: Engine, half_life_s: float | None, refresh_ttl_s: float = 1.0,
                 shared: bool = True, learner: str = DEFAULT_LEARNER) -> None:  # fmt: skip
        self.engine = engine
        self.half_life_s = half_life_s
        self.refresh_ttl_s = refresh_ttl_s
        # The linear learner's slow shared part is refitted by the background thread (every loop with news);
        # a request only adds cell evidence, unless that thread has fallen SHARED_REFIT_S behind.
        self.fit_posterior = Fitter(learner, shared, SHARED_REFIT_S if refresh_ttl_s > 0 else 0.0)
        self._lock = threading.Lock()  # guards the fields below; never held while reading the whole log
        self._catalog: Catalog | None = None
        self._evidence: Evidence | None = None
        self._posterior: Posterior | None = None
        self._last_id = 0
        self._refreshed_at = 0.0
        self._dirty = False
        self._refit_due = True
        self._rebuilt_at = -FULL_REBUILD_S
        self._building = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Coarsened vectors by their stored JSON: at most 8,008 distinct ones per label set.
        self._vector_codes: dict[str, int] = {}
        self._vector_matrix = np.zeros((0, 0))
        self._vector_labels: tuple[str, ...] = ()
        self._vectors_lock = threading.Lock()
        self.rebuilds = 0

    def start(self, catalog: Catalog, wait_s: float = 0.0) -> None:
        """Start the background thread; wait up to `wait_s` for the first build (then rank from the prior)."""
        self._catalog = catalog
        self._thread = threading.Thread(target=self._run, name="learned-state", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self._evidence is None:
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def touched(self) -> None:
        """This process wrote to the log: its next ranking must see it."""
        self._dirty = True

    def posterior(self, catalog: Catalog) -> Posterior:
        """The posterior to rank with now (the catalog prior alone until the first build is in)."""
        if catalog is not self._catalog:
            with self._lock:
                self._catalog, self._evidence, self._posterior = catalog, None, None
            self.rebuild_soon()
        evidence_, posterior = self._evidence, self._posterior
        if evidence_ is None:
            empty = np.zeros_like(catalog.affinity)
            return self.fit_posterior(catalog, empty, empty)
        due = time.monotonic() - self._refreshed_at >= self.refresh_ttl_s
        if due and not self._dirty and self.refresh_ttl_s > 0:
            self._wake.set()  # others' writes: the background thread reads them, never a request
            due = False
        # This process wrote (or every ranking must see every write: ttl 0): wait for a refresh in progress rather
        # than rank without it.
        wait_s = DIRTY_WAIT_S if self._dirty or self.refresh_ttl_s <= 0 else 0.0
        if (due or self._dirty) and self._lock.acquire(timeout=wait_s):
            try:
                if self._evidence is not None and self._catalog is catalog:
                    self._refresh_locked(catalog, INLINE_BATCH if self.refresh_ttl_s > 0 else REFRESH_BATCH)
                    posterior = self._posterior
            finally:
                self._lock.release()
        assert posterior is not None
        return posterior

    def _refresh_in_background(self) -> None:
        """Follow the log in full batches and refit the learner's slow shared part, off the request path."""
        catalog = self._catalog
        if catalog is None or self._evidence is None:
            return
        with self._lock:
            self._refresh_locked(catalog, FOLLOW_CHUNK)  # short holds of the lock: a request that wrote may wait
            assert self._evidence is not None
            successes, failures = self._evidence.now(time.time())
            changed, self._refit_due = self._refit_due, False
        if changed:
            self.fit_posterior.refit(catalog, successes, failures)  # slow, and without the lock
            with self._lock:
                if self._evidence is not None and self._catalog is catalog:
                    self._posterior = self._fit(catalog, self._evidence)

    def rebuild_soon(self) -> None:
        """Ask the background thread for a full rebuild now."""
        self._rebuilt_at = -FULL_REBUILD_S
        self._wake.set()

    def _refresh_locked(self, catalog: Catalog, batch: int) -> None:
        assert self._evidence is not None
        self._dirty = False
        with self.engine.connect() as conn:
            rows = conn.execute(_columns().where(evidence.c.id > self._last_id)
                                .order_by(evidence.c.id).limit(batch)).all()  # fmt: skip
        if rows:
            self._last_id = self._apply(catalog, self._evidence, rows)
            self._refit_due = True
            if len(rows) == batch:  # more to read: the background thread continues
                self._wake.set()
        if rows or self._posterior is None:
            self._posterior = self._fit(catalog, self._evidence)
        self._refreshed_at = time.monotonic()

    def _fit(self, catalog: Catalog, evidence_: Evidence) -> Posterior:
        successes, failures = evidence_.now(time.time())
        return self.fit_posterior(catalog, successes, failures)

    def _apply(self, catalog: Catalog | _Keys, target: Evidence, rows: Sequence[Any]) -> int:
        """Add log rows to `target` in one vectorised step; return the last id applied.

        Python touches each row only in list comprehensions of dictionary lookups (items, vectors by their
        JSON text): the arithmetic is numpy's, so a rebuild holds the interpreter lock as little as it can.
        """
        ids, items, served, vectors, successes, failures = zip(*rows, strict=True)
        if self._vector_labels != catalog.labels:
            with self._vectors_lock:
                self._vector_labels, self._vector_codes = catalog.labels, {}
                self._vector_matrix = np.zeros((0, len(catalog.labels)))
        index, codes = catalog.index, self._vector_codes
        rows_of = np.array([index.get(i, -1) for i in items])
        vector_of = np.array([codes[p] if p in codes else self._vector_code(catalog, p) for p in vectors])
        keep = rows_of >= 0  # an item since removed from the catalog is skipped
        served_s = np.array(served, dtype=np.float64)
        scale = np.ones(len(rows_of)) if target.half_life_s is None else \
            np.exp2((served_s - target.anchor_s) / target.half_life_s)  # fmt: skip
        matrix = self._vector_matrix[vector_of[keep]]
        np.add.at(target.successes, rows_of[keep], matrix * (scale * np.array(successes))[keep, None])
        np.add.at(target.failures, rows_of[keep], matrix * (scale * np.array(failures))[keep, None])
        return int(ids[-1])

    def _vector_code(self, catalog: Catalog | _Keys, probabilities: str) -> int:
        with self._vectors_lock:  # the rebuild thread and a refreshing request may both add vectors
            if probabilities not in self._vector_codes:
                p = json.loads(probabilities)
                vector = np.array([[float(p.get(label, 0.0)) for label in self._vector_labels]])
                self._vector_matrix = np.vstack([self._vector_matrix, vector])
                self._vector_codes[probabilities] = len(self._vector_matrix) - 1
            return self._vector_codes[probabilities]

    def rebuild(self) -> None:
        """Sum the whole log afresh (streamed in chunks), then swap it in and catch up with what came since."""
        catalog = self._catalog
        if catalog is None:
            return
        self._building.set()
        try:
            anchor_s = time.time()
            with self.engine.connect() as conn:
                size = int(conn.execute(select(func.max(evidence.c.id))).scalar_one() or 0)
            if size > IN_PROCESS_MAX_ROWS and self.engine.url.database not in (None, "", ":memory:"):
                # A big log is summed in another process: this one's interpreter lock stays with the requests.
                url = self.engine.url.render_as_string(hide_password=False)
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    last, successes, failures = pool.submit(_sum_log, url, catalog.labels, dict(catalog.index),
                                                            anchor_s, self.half_life_s).result()  # fmt: skip
                fresh = Evidence(successes, failures, anchor_s, self.half_life_s)
            else:
                fresh = Evidence.empty(catalog, anchor_s=anchor_s, half_life_s=self.half_life_s)
                last = self.sum_into(catalog, fresh, REBUILD_PAUSE)
            posterior = self._fit(catalog, fresh)
            with self._lock:
                if self._catalog is catalog:
                    self._evidence, self._posterior, self._last_id = fresh, posterior, last
                    self._dirty = True  # catch up with rows written during the rebuild
            self.rebuilds += 1
        finally:
            self._building.clear()

    def sum_into(self, catalog: Catalog | _Keys, fresh: Evidence, pause: float) -> int:
        """Stream the whole log into `fresh` in chunks, pausing `pause` s per s of work; return the last id."""
        with self.engine.connect() as conn:
            last = int(conn.execute(select(func.max(evidence.c.id))).scalar_one() or 0)
            result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(
                _columns().where(evidence.c.id <= last).order_by(evidence.c.id))  # fmt: skip
            for chunk in result.partitions(CHUNK):
                started = time.perf_counter()
                self._apply(catalog, fresh, chunk)
                time.sleep(pause * (time.perf_counter() - started))  # requests share the interpreter lock
        return last

    def compact(self) -> int:
        """Delete cancelled pairs of erased sessions' rows once every process has had time to read both."""
        with self.engine.begin() as conn:
            cutoff = time.time() - COMPACT_AFTER_S
            return int(conn.execute(delete(evidence).where(evidence.c.erased_at < cutoff)).rowcount or 0)

    @property
    def last_id(self) -> int:
        """The last evidence row this process has applied."""
        return self._last_id

    @property
    def is_rebuilding(self) -> bool:
        return self._building.is_set()

    def _run(self) -> None:
        last_compaction = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            stale = self._refreshed_at and now - self._refreshed_at > COMPACT_AFTER_S / 2
            try:
                if self._evidence is None or now - self._rebuilt_at > FULL_REBUILD_S or stale:
                    self._rebuilt_at = now
                    self.rebuild()
                else:
                    started = time.perf_counter()
                    self._refresh_in_background()
                    # A purge or an erasure elsewhere writes thousands of rows to follow: step through them,
                    # leaving the interpreter to the requests between steps.
                    time.sleep(min(1.0, FOLLOW_PAUSE * (time.perf_counter() - started)))
                if now - last_compaction > 60.0:
                    last_compaction = now
                    self.compact()
            except Exception:  # a database hiccup must not kill the thread; the next round retries
                logger.exception("learned state: background refresh failed")
            self._wake.wait(1.0)
            self._wake.clear()


def _columns() -> Select[Any]:
    e = evidence.c
    return select(e.id, e.item_id, e.served_at, e.probabilities, e.successes, e.failures)


@dataclass(frozen=True)
class _Keys:
    """What summing the log needs of a catalog: its labels and item rows (cheap to send to a child process)."""

    labels: tuple[str, ...]
    index: dict[str, int]


def _sum_log(url: str, labels: tuple[str, ...], index: dict[str, int], anchor_s: float,
             half_life_s: float | None) -> tuple[int, np.ndarray, np.ndarray]:  # fmt: skip
    """In a child process: the whole log's (last id, successes, failures)."""
    engine = create_engine(url)
    try:
        shape = (len(index), len(labels))
        fresh = Evidence(np.zeros(shape), np.zeros(shape), anchor_s, half_life_s)
        last = LearnedState(engine, half_life_s).sum_into(_Keys(labels, index), fresh, pause=0.0)
        return last, fresh.successes, fresh.failures
    finally:
        engine.dispose()
