"""The feedback store on a real SQLite: the impression log, position-weighted misses, caps, erasure, decay."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.abuse import SESSION_COUNTED_RECOMMENDATIONS, SESSION_COUNTED_VOTES, ClientBudget
from gateway.catalog import DEFAULT_CATALOG, Catalog, load_catalog
from gateway.feedback import FeedbackStore, ItemNotRecommendedError, Shown, UnknownRecommendationError
from gateway.learner import Evidence, Posterior
from gateway.linear_learner import LEARNERS, Fitter
from gateway.privacy import new_session_id, session_digest
from gateway.recommendation import align, rank
from gateway.votes import examination

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SAD, HAPPY = LABELS.index("sad"), LABELS.index("happy")
CATALOG = load_catalog(DEFAULT_CATALOG)


def session() -> str:
    return session_digest(new_session_id())


def shown(*items: str) -> list[Shown]:
    return [Shown(item, CATALOG.items[CATALOG.index[item]].domain, i, 0.5) for i, item in enumerate(items)]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}", stats_ttl_s=0, half_life_days=None)
    s.start(CATALOG, wait_s=10)
    yield s
    s.close()


def learned(store: FeedbackStore, catalog: Catalog = CATALOG) -> Posterior:
    return store.posterior(catalog)


def test_unknown_ids_are_refused_and_feedback_needs_the_session(store: FeedbackStore) -> None:
    me = session()
    rec = store.save_recommendation({"happy": 1.0}, shown("song-upbeat-pop-01"), me, "1")
    with pytest.raises(UnknownRecommendationError):
        store.record("00000000-0000-0000-0000-000000000000", "song-upbeat-pop-01", "click", me)
    with pytest.raises(UnknownRecommendationError):
        store.record(rec, "song-upbeat-pop-01", "like", session())
    with pytest.raises(ItemNotRecommendedError):
        store.record(rec, "song-upbeat-pop-02", "click", me)
    with pytest.raises(ValueError, match="unknown event"):
        store.record(rec, "song-upbeat-pop-01", "share", me)
    first = store.record(rec, "song-upbeat-pop-01", "like", me)
    assert first.counted and all(store.record(rec, "song-upbeat-pop-01", "like", me).duplicate for _ in range(50))
    assert store.count_events() == 1


def test_misses_are_logged_at_serve_time_weighted_by_position_and_likes_turn_them_into_successes(
    store: FeedbackStore,
) -> None:
    items = ["song-upbeat-pop-01", "song-upbeat-pop-02", "song-upbeat-pop-03", "song-upbeat-pop-04"]
    me = session()
    rec = store.save_recommendation({"happy": 1.0}, shown(*items), me, "1")
    rows = [CATALOG.index[i] for i in items]
    posterior = learned(store)  # no event from the client yet: every item shown is a position-weighted miss
    assert posterior.failures[rows, HAPPY] == pytest.approx([examination(p) for p in range(4)])
    assert examination(0) == 1.0 and examination(4) == pytest.approx(0.387, abs=1e-3)
    store.record(rec, items[2], "like", me)
    store.record(rec, items[1], "dismiss", me)
    store.record(rec, items[3], "impression", me)  # the client confirms it was on screen: a full miss
    posterior = learned(store)
    assert posterior.successes[rows, HAPPY] == pytest.approx([0, 0, 1, 0])
    assert posterior.failures[rows, HAPPY] == pytest.approx([1, 1, 0, 1])
    store.record(rec, items[1], "like", me)  # a like after a dismissal: the item's one vote becomes a success
    assert learned(store).successes[rows[1], HAPPY] == pytest.approx(1.0)


def test_one_session_counts_one_vote_per_item_however_often_it_is_shown(store: FeedbackStore) -> None:
    me, item = session(), "food-desserts-01"
    recs = [store.save_recommendation({"sad": 1.0}, shown(item), me, None) for _ in range(30)]
    counted = [store.record(rec, item, "like", me).counted for rec in recs]
    assert counted == [True] + [False] * 29 and store.count_events() == 30  # all stored, one counted
    assert learned(store).successes[CATALOG.index[item], SAD] == pytest.approx(1.0)


def test_a_session_counts_at_most_its_cap_of_votes(store: FeedbackStore) -> None:
    me = session()
    songs = [item.id for item in CATALOG.items if item.domain == "songs"][: SESSION_COUNTED_VOTES + 10]
    rec = store.save_recommendation({"sad": 1.0}, shown(*songs), me, None)
    counted = [store.record(rec, song, "dismiss", me).counted for song in songs]
    assert counted == [True] * SESSION_COUNTED_VOTES + [False] * 10


def test_a_session_counts_the_impressions_of_its_first_recommendations_only(store: FeedbackStore) -> None:
    me, item = session(), "place-museums-01"
    for _ in range(SESSION_COUNTED_RECOMMENDATIONS + 30):  # a bot reloading to bury an item under misses
        store.save_recommendation({"happy": 1.0}, shown(item), me, None)
    assert learned(store).failures[CATALOG.index[item], HAPPY] == pytest.approx(SESSION_COUNTED_RECOMMENDATIONS)


def test_a_client_counts_at_most_its_hourly_budget_across_sessions(store: FeedbackStore) -> None:
    budget = ClientBudget(per_window=25)
    counted = 0
    for _ in range(40):  # a fresh session per vote, all from one client
        me = session()
        rec = store.save_recommendation({"sad": 1.0}, shown("song-calm-acoustic-01"), me, None, lambda: True)
        counted += store.record(rec, "song-calm-acoustic-01", "like", me, lambda: budget.allow("203.0.113.9")).counted
    assert counted == 25 and ClientBudget(per_window=1).allow("198.51.100.1")  # other clients are unaffected
    assert learned(store).successes[CATALOG.index["song-calm-acoustic-01"], SAD] == pytest.approx(25)


@pytest.mark.parametrize("learner", LEARNERS)
def test_one_vote_moves_an_items_share_of_lists_by_at_most_five_points_and_one_like_claims_nothing(
    learner: str,
) -> None:
    """The review's case: one dismissal cut an item's share of happy song lists from 59 % to 10 %."""
    p = align({"happy": 1.0}, CATALOG.labels)
    fit = Fitter(learner)

    def share(evidence: Evidence, item: str) -> float:
        posterior = fit(CATALOG, evidence.successes, evidence.failures)
        lists = [rank(CATALOG, p, posterior, ["songs"], 5, np.random.default_rng(s))["songs"] for s in range(1000)]
        return sum(item in [r.item.id for r in rows] for rows in lists) / len(lists)

    empty = Evidence.empty(CATALOG)
    shares = {item.id: share(empty, item.id) for item in CATALOG.items if item.category == "upbeat-pop"}
    for target in {min(shares, key=lambda i: abs(shares[i] - 0.59)), max(shares, key=lambda i: shares[i])}:
        dismissed, liked = Evidence.empty(CATALOG), Evidence.empty(CATALOG)
        dismissed.add(CATALOG.index[target], p, 0.0, 1.0)
        liked.add(CATALOG.index[target], p, 1.0, 0.0)
        assert 0.3 < shares[target]
        assert abs(share(dismissed, target) - shares[target]) <= 0.05
        assert abs(share(liked, target) - shares[target]) <= 0.05
        top = rank(CATALOG, p, fit(CATALOG, liked.successes, liked.failures), ["songs"], 12,
                   np.random.default_rng(0))["songs"]  # fmt: skip
        assert not any("liked it" in r.reason for r in top)


def test_erasure_subtracts_the_sessions_evidence_on_every_replica_without_a_rebuild(store: FeedbackStore) -> None:
    replica = FeedbackStore(str(store.engine.url), stats_ttl_s=0, half_life_days=None)
    replica.start(CATALOG, wait_s=10)
    alice, bob = session(), session()
    items = ("song-soulful-ballads-01", "song-soulful-ballads-02")
    for who in (alice, bob):
        rec = store.save_recommendation({"sad": 0.7, "happy": 0.3}, shown(*items), who, None)
        store.record(rec, items[0], "like", who)
    before = replica.posterior(CATALOG)
    assert before.successes[CATALOG.index[items[0]]].sum() == pytest.approx(2.0)
    rebuilds = (store.learned.rebuilds, replica.learned.rebuilds)
    assert store.delete_session(alice) == (1, 1)
    for s in (store, replica):
        after = s.posterior(CATALOG)
        assert after.successes[CATALOG.index[items[0]]].sum() == pytest.approx(1.0)
        assert after.failures[CATALOG.index[items[1]]].sum() == pytest.approx(examination(1))
    assert (store.learned.rebuilds, replica.learned.rebuilds) == rebuilds  # subtracted, not rebuilt
    fresh = FeedbackStore(str(store.engine.url), half_life_days=None)
    fresh.start(CATALOG, wait_s=10)  # a full rebuild of the log agrees with the subtraction
    assert np.allclose(fresh.posterior(CATALOG).successes, replica.posterior(CATALOG).successes)
    assert np.allclose(fresh.posterior(CATALOG).failures, replica.posterior(CATALOG).failures)
    with store.engine.connect() as conn:  # nothing of alice's is left linked to a recommendation
        linked = conn.exec_driver_sql("SELECT count(*) FROM evidence WHERE recommendation_id IS NOT NULL").scalar()
    assert linked == 3 and store.learned.compact() == 0  # cancelled pairs wait COMPACT_AFTER_S before deletion
    for s in (replica, fresh):
        s.close()


def test_retention_purges_in_batches_while_writers_keep_writing(store: FeedbackStore) -> None:
    old = [store.save_recommendation({"sad": 1.0}, shown("food-desserts-01"), session(), None) for _ in range(60)]
    assert len(old) == 60
    stop, written = threading.Event(), []

    def writer() -> None:
        while not stop.is_set():
            written.append(store.save_recommendation({"sad": 1.0}, shown("food-desserts-02"), session(), None))

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.05)
    cutoff = time.time()
    purged = store.purge(older_than_s=time.time() - cutoff + 0.01, batch=7)
    stop.set()
    thread.join()
    assert purged >= 60 and written
    row = CATALOG.index["food-desserts-01"]
    assert learned(store).failures[row, SAD] == pytest.approx(0.0, abs=1e-9)


def test_incremental_state_equals_a_full_rebuild(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    live = FeedbackStore(url, stats_ttl_s=0, half_life_days=30)
    live.start(CATALOG, wait_s=10)
    rng = np.random.default_rng(5)
    items = ("song-upbeat-pop-01", "food-desserts-02", "place-museums-03")
    sessions = [session() for _ in range(8)]
    recs = [(s, live.save_recommendation({"happy": 0.6, "sad": 0.4}, shown(*items), s, None)) for s in sessions]
    for step in range(120):
        who, rec = recs[rng.integers(len(recs))]
        event = ["impression", "click", "like", "dismiss", "purchase"][rng.integers(5)]
        live.record(rec, items[rng.integers(3)], event, who)
        if step % 7 == 0:
            live.posterior(CATALOG)  # refresh part-way: later refreshes apply only the difference
        if step == 60:
            live.delete_session(sessions[0])
            recs = recs[1:]
    incremental = live.posterior(CATALOG)
    rebuilt = FeedbackStore(url, half_life_days=30)
    rebuilt.start(CATALOG, wait_s=10)
    assert np.allclose(incremental.successes, rebuilt.posterior(CATALOG).successes)
    assert np.allclose(incremental.failures, rebuilt.posterior(CATALOG).failures)
    assert incremental.successes.sum() > 0
    live.close()
    rebuilt.close()


def test_old_evidence_weighs_half_after_one_half_life() -> None:
    evidence = Evidence.empty(CATALOG, anchor_s=1000.0, half_life_s=100.0)
    evidence.add(0, np.eye(7)[SAD], 1.0, 0.0, t_s=1000.0)
    evidence.add(0, np.eye(7)[SAD], 1.0, 0.0, t_s=1100.0)
    evidence.add(0, np.eye(7)[SAD], -1.0, 0.0, t_s=1100.0)  # a subtraction cancels exactly
    assert evidence.now(1100.0)[0][0, SAD] == pytest.approx(0.5)
    assert evidence.now(1300.0)[0][0, SAD] == pytest.approx(0.125)


def test_a_large_log_is_rebuilt_in_a_child_process_with_the_same_result(
    store: FeedbackStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.learned_state as learned_state

    for i in range(5):
        me = session()
        rec = store.save_recommendation({"sad": 0.6, "fear": 0.4}, shown("song-calm-acoustic-01", "food-spicy-02"), me,
                                        None)  # fmt: skip
        store.record(rec, "song-calm-acoustic-01", "like" if i % 2 else "dismiss", me)
    before = learned(store)
    spawned: list[int] = []
    real = learned_state.ProcessPoolExecutor

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawned.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(learned_state, "IN_PROCESS_MAX_ROWS", 1)
    monkeypatch.setattr(learned_state, "ProcessPoolExecutor", counting)
    store.learned.rebuild()
    after = learned(store)
    assert spawned == [1]
    assert np.allclose(before.successes, after.successes) and np.allclose(before.failures, after.failures)
    assert after.successes.sum() == pytest.approx(2.0)
