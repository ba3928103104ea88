"""The recommendation loop without a model: JSON emotions in, rankings out, feedback stored in a real SQLite."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import DEFAULT_CATALOG, DOMAINS, CatalogError, load_catalog
from gateway.feedback import FeedbackStore, ItemNotRecommendedError, UnknownRecommendationError
from gateway.privacy import new_session_id, session_digest
from gateway.recommendation import PER_CATEGORY_CAP, FeedbackStats, Posterior, align, rank
from gateway.settings import Settings
from tests.conftest import free_port

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SESSION = session_digest(new_session_id())  # what the store keeps of a session: the digest of its id


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
    rec = store.save_recommendation({"happy": 1.0}, [("song-upbeat-pop-01", "songs")], SESSION, "1")
    with pytest.raises(UnknownRecommendationError):
        store.record("00000000-0000-0000-0000-000000000000", "song-upbeat-pop-01", "click", SESSION)
    with pytest.raises(ItemNotRecommendedError):
        store.record(rec, "movie-action-01", "click", SESSION)
    with pytest.raises(ValueError, match="unknown event"):
        store.record(rec, "song-upbeat-pop-01", "share", SESSION)
    store.record(rec, "song-upbeat-pop-01", "like", SESSION)
    store.close()
    reopened = FeedbackStore(url)
    stats = reopened.stats(load_catalog(DEFAULT_CATALOG))
    row = load_catalog(DEFAULT_CATALOG).index["song-upbeat-pop-01"]
    assert stats.successes[row, LABELS.index("happy")] == 1.0 and stats.successes.sum() == 1.0
    reopened.close()


def test_two_concurrent_writers_lose_nothing_and_store_a_replay_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    stores = [FeedbackStore(url), FeedbackStore(url)]  # two "replicas" on one database
    recs = [stores[0].save_recommendation({"sad": 1.0}, [("food-desserts-01", "food")], SESSION, None)
            for _ in range(50)]  # fmt: skip

    def write(store: FeedbackStore, event: str) -> None:
        for rec in recs:
            store.record(rec, "food-desserts-01", event, SESSION)
            store.record(rec, "food-desserts-01", "impression", SESSION)  # both replicas: the same event

    threads = [threading.Thread(target=write, args=a) for a in ((stores[0], "click"), (stores[1], "like"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[1].count_events() == 150  # 50 clicks + 50 likes + 50 impressions, each stored once
    for s in stores:
        s.close()


def test_feedback_needs_the_recommendations_session(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    rec = store.save_recommendation({"sad": 0.123456, "happy": 0.876544}, [("food-desserts-01", "food")], SESSION, None)
    with pytest.raises(UnknownRecommendationError):  # another session's recommendation does not exist for you
        store.record(rec, "food-desserts-01", "like", session_digest(new_session_id()))
    first = store.record(rec, "food-desserts-01", "like", SESSION)
    replays = [store.record(rec, "food-desserts-01", "like", SESSION) for _ in range(200)]
    assert not first.duplicate and all(r.duplicate and r.event_id == first.event_id for r in replays)
    assert store.count_events() == 1
    with store.engine.connect() as conn:  # the stored vector is coarsened, not the model's full-precision output
        stored = conn.exec_driver_sql("SELECT probabilities, session_id FROM recommendations").one()
    assert json.loads(stored[0]) == {"sad": 0.1, "happy": 0.9} and stored[1] == SESSION
    store.close()


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
                                                             "item_id": song["item_id"], "event": event,
                                                             "session_id": rec["session_id"]})  # fmt: skip
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
    item, session = rec["domains"]["food"][0]["item_id"], rec["session_id"]
    unknown = client.post("/v1/feedback", json={"recommendation_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                                 "item_id": item, "event": "click", "session_id": session})  # fmt: skip
    assert unknown.status_code == 404
    wrong_item = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                    "item_id": "movie-action-01", "event": "click",
                                                    "session_id": session})  # fmt: skip
    assert wrong_item.status_code == 422 and "not part of" in wrong_item.json()["detail"]
    bad_event = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"], "item_id": item,
                                                   "event": "share", "session_id": session})  # fmt: skip
    assert bad_event.status_code == 422 and "event" in bad_event.json()["detail"]
    event = {"recommendation_id": rec["recommendation_id"], "item_id": item, "event": "like"}
    assert client.post("/v1/feedback", json=event).status_code == 422  # no session: refused
    other = client.post("/v1/recommendations", json={"emotion": "sad", "k": 1}).json()["session_id"]
    stranger = client.post("/v1/feedback", json=event | {"session_id": other})
    assert stranger.status_code == 404 and stranger.json()["title"] == unknown.json()["title"]  # as if it did not exist
    stored = client.post("/v1/feedback", json=event | {"session_id": session})
    replayed = client.post("/v1/feedback", json=event | {"session_id": session})
    assert (stored.status_code, stored.json()["recorded"]) == (201, True)
    assert (replayed.status_code, replayed.json()) == (200, {"recorded": False, "event_id": stored.json()["event_id"]})


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
    rec = store.save_recommendation({"happy": 1.0}, items, SESSION, "1")
    for item, event in [(items[0][0], "impression"), (items[0][0], "click"), (items[1][0], "impression"),
                        (items[1][0], "dismiss")]:  # fmt: skip
        store.record(rec, item, event, SESSION)
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
    rec = store.save_recommendation({"sad": 1.0}, [(item, "food")], SESSION, "1")
    for _ in range(100):
        store.record(rec, item, "purchase", SESSION)
    store.record(rec, item, "impression", SESSION)
    assert store.count_events() == 2  # a replay is stored once
    sad, row = LABELS.index("sad"), catalog.index[item]
    stats = store.stats(catalog)
    assert (stats.successes[row, sad], stats.failures[row, sad]) == (1.0, 0.0)
    digest = session_digest(new_session_id())
    second = store.save_recommendation({"sad": 1.0}, [(item, "food")], digest, "1")
    store.record(second, item, "like", digest)
    assert store.stats(catalog).successes[row, sad] == 2.0  # another recommendation, another vote
    store.close()


def test_retention_deletes_old_feedback(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    rec = store.save_recommendation({"sad": 1.0}, [("food-desserts-01", "food")], SESSION, None)
    store.record(rec, "food-desserts-01", "like", SESSION)
    assert store.purge(older_than_s=3600) == 0 and store.count_events() == 1
    assert store.purge(older_than_s=-1) == 1 and store.count_events() == 0  # everything is "older" than the future
    with pytest.raises(UnknownRecommendationError):
        store.record(rec, "food-desserts-01", "like", SESSION)
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
                                                             "item_id": song["item_id"], "event": event,
                                                             "session_id": rec["session_id"]})  # fmt: skip
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
    recs = [live.save_recommendation({"happy": 0.6, "sad": 0.4}, items, SESSION, None) for _ in range(40)]
    for step in range(120):
        rec, (item, _) = recs[rng.integers(len(recs))], items[rng.integers(len(items))]
        live.record(rec, item, ["impression", "click", "like", "dismiss", "purchase"][rng.integers(5)], SESSION)
        if step % 7 == 0:
            live.stats(catalog)  # refresh part-way: later refreshes must apply only the difference
    incremental = live.stats(catalog)
    rebuilt = FeedbackStore(url).stats(catalog)
    assert np.allclose(incremental.successes, rebuilt.successes) and np.allclose(incremental.failures, rebuilt.failures)
    assert incremental.successes.sum() > 0 and incremental.failures.sum() > 0
    live.close()


def test_erasing_a_session_deletes_its_feedback_and_what_was_learned(client: TestClient, settings: Settings) -> None:
    def recommend(session_id: str | None = None) -> dict:  # type: ignore[type-arg]
        body = {"emotion": "sad", "domains": ["songs"], "k": 20} | ({"session_id": session_id} if session_id else {})
        return dict(client.post("/v1/recommendations", json=body).json())

    mine, theirs = recommend(), recommend()
    alice, bob = mine["session_id"], theirs["session_id"]
    assert alice != bob and len(alice) == 43  # server-issued: 256 random bits, base64url
    chosen = "alice-1-chosen-by-the-client-0123456789abcd"  # well-formed, but never issued
    assert recommend(chosen)["session_id"] != chosen  # so it cannot be claimed: a new session is issued
    target = mine["domains"]["songs"][-1]["item_id"]
    for _ in range(30):
        rec = recommend(alice)
        assert rec["session_id"] == alice  # a known session is kept
        for event in ("impression", "like"):
            client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"], "item_id": target,
                                              "event": event, "session_id": alice})  # fmt: skip
    their_song = theirs["domains"]["songs"][0]["item_id"]
    client.post("/v1/feedback", json={"recommendation_id": theirs["recommendation_id"], "item_id": their_song,
                                      "event": "like", "session_id": bob})  # fmt: skip
    replica = FeedbackStore(settings.database_url, stats_ttl_s=0)  # another gateway on the same database
    catalog = load_catalog(DEFAULT_CATALOG)
    assert replica.stats(catalog).successes[catalog.index[target]].sum() >= 30

    def position() -> int:
        shown = [s["item_id"] for s in recommend()["domains"]["songs"]]
        return shown.index(target) if target in shown else len(shown)

    learned = position()
    assert learned < 19  # alice's likes lifted the song from last place
    assert replica.session_counts(session_digest(alice)) == (31, 60)

    unknown = client.delete(f"/v1/sessions/{new_session_id()}")
    erased = client.delete(f"/v1/sessions/{alice}")
    assert erased.status_code == unknown.status_code == 204 and erased.content == unknown.content == b""
    assert replica.session_counts(session_digest(alice)) == (0, 0)  # verified in the database, not by the answer
    assert replica.session_counts(session_digest(bob)) == (1, 1)  # nobody else's feedback
    assert replica.stats(catalog).successes[catalog.index[target]].sum() < 1  # the replica rebuilt its figures
    assert position() > learned  # and the ranking forgot them
    assert client.delete(f"/v1/sessions/{alice}").status_code == 204  # idempotent
    assert recommend(alice)["session_id"] != alice  # an erased session is not revived: a new one starts
    assert client.delete("/v1/sessions/not%20valid").status_code == 422
    assert client.delete("/v1/sessions/alice-1").status_code == 422  # not an id the server could have issued
    replica.close()
