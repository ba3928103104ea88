"""The recommendation loop without a model: JSON emotions in, rankings out, feedback stored in a real SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import DEFAULT_CATALOG, DOMAINS, CatalogError, load_catalog
from gateway.feedback import FeedbackStore, ItemNotRecommendedError, UnknownRecommendationError
from gateway.recommendation import PER_CATEGORY_CAP, FeedbackStats, Posterior, align, rank
from gateway.settings import Settings
from tests.conftest import free_port

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    database_url = f"sqlite:///{tmp_path / 'f.db'}"
    return Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0, database_url=database_url,
                    rate_limit_per_s=0, recommendation_seed=7)  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_embedded_catalog_is_valid_and_large_enough() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    assert catalog.labels == LABELS
    assert len(catalog.items) >= 300
    assert {item.domain for item in catalog.items} == set(DOMAINS)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Bad Id,T,songs,c,t,0,0,0,0,0,0,0", "line 3: id 'Bad Id'"),
        ("x-1,T,songs,c,t,0,0,0,0,0,0,0", "line 3: duplicate id"),
        ("x-2,T,podcasts,c,t,0,0,0,0,0,0,0", "line 3: domain 'podcasts'"),
        ("x-2,T,songs,c,t,0,0,0,1.5,0,0,0", "line 3: affinities must be in 0..1"),
        ("x-2,T,songs,c,t,0,0,zero,0,0,0,0", "line 3: affinities must be numbers"),
        ("x-2,,songs,c,t,0,0,0,0,0,0,0", "line 3: title and category"),
    ],
)
def test_catalog_errors_name_the_row(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(
        "id,title,domain,category,tags," + ",".join(LABELS) + "\nx-1,T,songs,c,t,0,0,0,0,0,0,0\n" + row + "\n"
    )
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_ranking_uses_the_probability_vector_and_caps_categories() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    stats = FeedbackStats.empty(catalog)
    sad = rank(catalog, align({"sad": 1.0}, catalog.labels), stats, ["songs"], 6, np.random.default_rng(0))["songs"]
    happy = rank(catalog, align({"happy": 1.0}, catalog.labels), stats, ["songs"], 6, np.random.default_rng(0))["songs"]
    assert len(sad) == 6 and [r.item.id for r in sad] != [r.item.id for r in happy]
    assert max(sum(r.item.category == c for r in sad) for c in {r.item.category for r in sad}) <= PER_CATEGORY_CAP
    mixed = rank(
        catalog, align({"sad": 0.5, "happy": 0.5}, catalog.labels), stats, ["songs"], 6, np.random.default_rng(0)
    )
    assert [r.item.id for r in mixed["songs"]] not in ([r.item.id for r in sad], [r.item.id for r in happy])
    assert all("sad mood" in r.reason for r in sad)


def test_ranking_is_deterministic_with_a_seed() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    args = (catalog, align({"fear": 1.0}, catalog.labels), FeedbackStats.empty(catalog), list(DOMAINS), 5)
    assert rank(*args, np.random.default_rng(3)) == rank(*args, np.random.default_rng(3))


def test_store_rejects_unknown_ids_and_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = FeedbackStore(url)
    rec = store.save_recommendation({"happy": 1.0}, [("song-upbeat-pop-01", "songs")], None, "1")
    with pytest.raises(UnknownRecommendationError):
        store.record("00000000-0000-0000-0000-000000000000", "song-upbeat-pop-01", "click")
    with pytest.raises(ItemNotRecommendedError):
        store.record(rec, "movie-action-01", "click")
    with pytest.raises(ValueError, match="unknown event"):
        store.record(rec, "song-upbeat-pop-01", "share")
    store.record(rec, "song-upbeat-pop-01", "like")
    store.close()
    reopened = FeedbackStore(url)
    stats = reopened.stats(load_catalog(DEFAULT_CATALOG))
    row = load_catalog(DEFAULT_CATALOG).index["song-upbeat-pop-01"]
    assert stats.successes[row, LABELS.index("happy")] == 1.0 and stats.successes.sum() == 1.0
    reopened.close()


def test_two_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    stores = [FeedbackStore(url), FeedbackStore(url)]  # two "replicas" on one database
    rec = stores[0].save_recommendation({"sad": 1.0}, [("food-desserts-01", "food")], None, None)

    def write(store: FeedbackStore) -> None:
        for _ in range(100):
            store.record(rec, "food-desserts-01", "click")

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[1].count_events() == 200
    for s in stores:
        s.close()


def test_json_recommendations_then_feedback_changes_later_rankings(client: TestClient) -> None:
    first = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs"], "k": 5})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["emotion"] == {"label": "sad", "probabilities": dict.fromkeys(LABELS, 0.0) | {"sad": 1.0},
                               "source": "emotion", "uncertain": False}  # fmt: skip
    songs = body["domains"]["songs"]
    assert len(songs) == 5 and all(s["reason"] for s in songs)
    # Teach the store that people who look sad love one song that was ranked last: every shown song gets an
    # impression, the target a like (what a client reports when a person likes one of the songs shown).
    target = songs[-1]["item_id"]
    for _ in range(20):
        rec = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs"], "k": 20}).json()
        for song in rec["domains"]["songs"]:
            for event in ("impression", "like") if song["item_id"] == target else ("impression",):
                response = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                             "item_id": song["item_id"], "event": event})  # fmt: skip
                assert response.status_code == 201 and response.json()["recorded"] is True
    later = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs"], "k": 5}).json()
    assert later["domains"]["songs"][0]["item_id"] == target
    assert "liked by people who looked sad" in later["domains"]["songs"][0]["reason"]
    other = client.post("/v1/recommendations", json={"emotion": "happy", "domains": ["songs"], "k": 5}).json()
    assert other["domains"]["songs"][0]["item_id"] != target  # learned for sad, not for every emotion
    metrics = client.get("/metrics").text
    assert 'emotorch_feedback_events_total{domain="songs",emotion="sad",event="like"}' in metrics


@pytest.mark.parametrize(
    ("payload", "status", "text"),
    [
        ({"emotion": "joy"}, 422, "unknown emotion"),
        ({"emotion": "sad", "probabilities": {"sad": 1.0}}, 422, "exactly one"),
        ({}, 422, "exactly one"),
        ({"probabilities": {"sad": -1.0}}, 422, "non-negative"),
        ({"probabilities": {"elated": 1.0}}, 422, "unknown emotion label"),
        ({"emotion": "sad", "k": 0}, 422, "k"),
        ({"emotion": "sad", "k": 500}, 422, "k"),
        ({"emotion": "sad", "domains": ["podcasts"]}, 422, "domains"),
        ({"emotion": "sad", "colour": "blue"}, 422, "colour"),
        ({"emotion": "\u00e9motion" * 100}, 422, "emotion"),
    ],
)
def test_bad_recommendation_queries_get_clear_4xx(client: TestClient, payload: dict, status: int, text: str) -> None:  # type: ignore[type-arg]
    response = client.post("/v1/recommendations", json=payload)
    assert response.status_code == status and text in response.json()["detail"], response.text


def test_malformed_json_and_wrong_content_type(client: TestClient) -> None:
    broken = client.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]
    text = client.post("/v1/recommendations", content=b"sad", headers={"content-type": "text/plain"})
    assert text.status_code == 415


def test_bad_feedback_is_rejected(client: TestClient) -> None:
    rec = client.post("/v1/recommendations", json={"emotion": "happy", "domains": ["food"], "k": 2}).json()
    item = rec["domains"]["food"][0]["item_id"]
    unknown = client.post("/v1/feedback", json={"recommendation_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                                 "item_id": item, "event": "click"})  # fmt: skip
    assert unknown.status_code == 404
    wrong_item = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                    "item_id": "movie-action-01", "event": "click"})  # fmt: skip
    assert wrong_item.status_code == 422 and "not part of" in wrong_item.json()["detail"]
    bad_event = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"], "item_id": item,
                                                   "event": "share"})  # fmt: skip
    assert bad_event.status_code == 422 and "event" in bad_event.json()["detail"]


def test_image_recommendations_need_consent_even_without_a_model(client: TestClient) -> None:
    response = client.post("/v1/recommendations", files={"image": ("f.png", b"x")}, data={"k": "3"})
    assert response.status_code == 422 and "consent" in response.json()["detail"]


def test_posterior_updates_follow_the_emotion_weights() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    stats = FeedbackStats.empty(catalog)
    row = catalog.index["movie-comedy-01"]
    weights = align({"happy": 0.75, "surprise": 0.25}, catalog.labels)
    stats.add(row, weights, successes=4, failures=2)
    assert stats.successes[row, LABELS.index("happy")] == 3.0 and stats.successes[row, LABELS.index("surprise")] == 1.0
    assert stats.failures[row].sum() == pytest.approx(2.0) and stats.successes.sum() == pytest.approx(4.0)


def test_posterior_starts_from_the_catalog_and_learns_at_both_levels() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    happy, sad = LABELS.index("happy"), LABELS.index("sad")
    stats = FeedbackStats.empty(catalog)
    prior = Posterior.fit(catalog, stats).mean()
    # Before any feedback the ordering under each emotion is the catalog's affinity order.
    assert np.array_equal(
        np.argsort(-prior[:, sad], kind="stable"), np.argsort(-catalog.affinity[:, sad], kind="stable")
    )
    liked, missed = catalog.index["movie-comedy-01"], catalog.index["movie-comedy-02"]
    stats.add(liked, np.eye(len(LABELS))[happy], successes=8, failures=12)
    stats.add(missed, np.eye(len(LABELS))[happy], successes=0, failures=20)
    learned = Posterior.fit(catalog, stats).mean()
    # Relative to an item nobody gave feedback on (the global rate moves every item), the liked item rose and
    # the missed one fell under "happy"; the item level carries that to the other emotions, less strongly.
    untouched = catalog.index["movie-comedy-03"]
    change = learned / prior
    for emotion in (happy, sad):
        assert change[liked, emotion] > 1.5 * change[untouched, emotion] > 3 * change[missed, emotion]
    assert change[liked, happy] > change[liked, sad] and change[missed, happy] < change[missed, sad]
    # Untouched items keep their place relative to each other.
    others = [i for i in range(len(catalog.items)) if i not in (liked, missed)]
    assert np.array_equal(
        np.argsort(-learned[others, sad], kind="stable"), np.argsort(-prior[others, sad], kind="stable")
    )


def test_posterior_samples_center_on_the_mean_with_the_chosen_spread() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    posterior = Posterior.fit(catalog, FeedbackStats.empty(catalog))
    rng = np.random.default_rng(0)
    full = np.array([posterior.sample(rng, spread=1.0) for _ in range(400)])
    narrow = np.array([posterior.sample(rng, spread=0.2) for _ in range(400)])
    mean = posterior.mean()
    assert np.allclose(narrow.mean(0), mean, rtol=0.1, atol=2e-3)
    ratio = np.median(narrow.std(0) / full.std(0))
    assert 0.15 < ratio < 0.3  # the spread scales the standard deviation
    assert np.array_equal(posterior.sample(rng, spread=0.0), mean)  # no spread: the posterior mean


def test_store_stats_count_impressions_without_success_as_failures(tmp_path: Path) -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    items = [("song-upbeat-pop-01", "songs"), ("song-upbeat-pop-02", "songs")]
    rec = store.save_recommendation({"happy": 1.0}, items, "session-1", "1")
    for item, event in [(items[0][0], "impression"), (items[0][0], "click"), (items[1][0], "impression"),
                        (items[1][0], "dismiss")]:  # fmt: skip
        store.record(rec, item, event)
    stats = store.stats(catalog)
    happy = LABELS.index("happy")
    a, b = catalog.index[items[0][0]], catalog.index[items[1][0]]
    assert (stats.successes[a, happy], stats.failures[a, happy]) == (1.0, 0.0)
    assert (stats.successes[b, happy], stats.failures[b, happy]) == (0.0, 1.0)  # seen and dismissed: one miss
    store.close()


def test_replayed_feedback_counts_once_per_item_shown(tmp_path: Path) -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    item = "food-fresh-salads-02"
    rec = store.save_recommendation({"sad": 1.0}, [(item, "food")], "session-1", "1")
    for _ in range(100):
        store.record(rec, item, "purchase")
    store.record(rec, item, "impression")
    sad, row = LABELS.index("sad"), catalog.index[item]
    stats = store.stats(catalog)
    assert (stats.successes[row, sad], stats.failures[row, sad]) == (1.0, 0.0)
    second = store.save_recommendation({"sad": 1.0}, [(item, "food")], "session-2", "1")
    store.record(second, item, "like")
    assert store.stats(catalog).successes[row, sad] == 2.0  # another recommendation, another vote
    store.close()


def test_retention_deletes_old_feedback(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    rec = store.save_recommendation({"sad": 1.0}, [("food-desserts-01", "food")], None, None)
    store.record(rec, "food-desserts-01", "like")
    assert store.purge(older_than_s=3600) == 0 and store.count_events() == 1
    assert store.purge(older_than_s=-1) == 1 and store.count_events() == 0  # everything is "older" than the future
    with pytest.raises(UnknownRecommendationError):
        store.record(rec, "food-desserts-01", "like")
    store.close()


def test_learned_rankings_survive_a_gateway_restart(settings: Settings) -> None:
    def top_song(client: TestClient) -> str:
        body = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 1}).json()
        return str(body["domains"]["songs"][0]["item_id"])

    with TestClient(create_app(settings)) as client:
        before = top_song(client)
        rec = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 20}).json()
        favourite = rec["domains"]["songs"][-1]["item_id"]
        for _ in range(25):  # 25 people shown fear songs: each likes the favourite and dismisses the rest
            rec = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 20}).json()
            assert favourite in [song["item_id"] for song in rec["domains"]["songs"]]
            for song in rec["domains"]["songs"]:
                event = "like" if song["item_id"] == favourite else "dismiss"
                response = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                             "item_id": song["item_id"], "event": event})  # fmt: skip
                assert response.status_code == 201
        learned = top_song(client)
    assert learned == favourite != before
    with TestClient(create_app(settings)) as restarted:  # a new process on the same database
        assert top_song(restarted) == favourite


def test_incremental_stats_equal_a_full_rebuild(tmp_path: Path) -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    url = f"sqlite:///{tmp_path / 'f.db'}"
    live = FeedbackStore(url, stats_ttl_s=0)
    rng = np.random.default_rng(5)
    items = [("song-upbeat-pop-01", "songs"), ("food-desserts-02", "food"), ("place-museums-03", "places")]
    recs = [live.save_recommendation({"happy": 0.6, "sad": 0.4}, items, None, None) for _ in range(40)]
    for step in range(120):
        rec, (item, _) = recs[rng.integers(len(recs))], items[rng.integers(len(items))]
        live.record(rec, item, ["impression", "click", "like", "dismiss", "purchase"][rng.integers(5)])
        if step % 7 == 0:
            live.stats(catalog)  # refresh part-way: later refreshes must apply only the difference
    incremental = live.stats(catalog)
    rebuilt = FeedbackStore(url).stats(catalog)
    assert np.allclose(incremental.successes, rebuilt.successes) and np.allclose(incremental.failures, rebuilt.failures)
    assert incremental.successes.sum() > 0 and incremental.failures.sum() > 0
    live.close()


def test_erasing_a_session_deletes_its_feedback_and_what_was_learned(client: TestClient, settings: Settings) -> None:
    def recommend(session_id: str) -> dict:  # type: ignore[type-arg]
        body = {"emotion": "sad", "domains": ["songs"], "k": 20, "session_id": session_id}
        return dict(client.post("/v1/recommendations", json=body).json())

    mine, theirs = recommend("alice-1"), recommend("bob-2")
    target = mine["domains"]["songs"][-1]["item_id"]
    for _ in range(30):
        rec = recommend("alice-1")
        for event in ("impression", "like"):
            client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"], "item_id": target,
                                              "event": event})  # fmt: skip
    their_song = theirs["domains"]["songs"][0]["item_id"]
    client.post("/v1/feedback", json={"recommendation_id": theirs["recommendation_id"], "item_id": their_song,
                                      "event": "like"})  # fmt: skip
    replica = FeedbackStore(settings.database_url, stats_ttl_s=0)  # another gateway on the same database
    catalog = load_catalog(DEFAULT_CATALOG)
    assert replica.stats(catalog).successes[catalog.index[target]].sum() >= 30

    def position(session_id: str) -> int:
        shown = [s["item_id"] for s in recommend(session_id)["domains"]["songs"]]
        return shown.index(target) if target in shown else len(shown)

    learned = position("carol-3")
    assert learned < 19  # alice's likes lifted the song from last place
    assert replica.session_counts("alice-1") == (31, 60)
    assert replica.session_counts("carol-3") == (1, 0)

    erased = client.delete("/v1/sessions/alice-1")
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"session_id": "alice-1", "recommendations_deleted": 31, "events_deleted": 60}
    assert replica.session_counts("alice-1") == (0, 0)  # verified in the database, not only by the answer
    assert replica.session_counts("bob-2") == (1, 1)  # nobody else's feedback
    assert replica.stats(catalog).successes[catalog.index[target]].sum() < 1  # the replica rebuilt its figures
    assert position("dave-4") > learned  # and the ranking forgot them
    assert client.delete("/v1/sessions/alice-1").json()["recommendations_deleted"] == 0  # idempotent
    assert client.delete("/v1/sessions/not%20valid").status_code == 422
    assert client.delete("/v1/sessions/" + "x" * 65).status_code == 422
    replica.close()
