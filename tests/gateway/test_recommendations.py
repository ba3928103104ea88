"""The recommendation loop without a model: catalog, ranking, reasons, and the JSON routes on a real SQLite."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import DEFAULT_CATALOG, ILLUSTRATIVE, CatalogError, load_catalog
from gateway.learner import Posterior
from gateway.reasons import ADJECTIVES, carriers, reason
from gateway.recommendation import PER_CATEGORY_CAP, align, rank, select
from gateway.settings import Settings
from gateway.vocabulary import DOMAIN_TITLES, DOMAINS
from tests.conftest import free_port

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    database_url = f"sqlite:///{tmp_path / 'f.db'}"
    return Settings(triton_url=f"127.0.0.1:{free_port()}", model_wait_s=0, database_url=database_url,
                    rate_limit_per_s=0, recommendation_seed=7, counted_per_client_hour=100_000)  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def prior(catalog):  # type: ignore[no-untyped-def]
    zeros = np.zeros_like(catalog.affinity)
    return Posterior.fit(catalog, zeros, zeros)


def test_embedded_catalog_has_real_movies_with_provenance_and_labels_the_rest_illustrative() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    assert catalog.labels == LABELS and {item.domain for item in catalog.items} == set(DOMAINS)
    provenance = json.loads(DEFAULT_CATALOG.with_name("catalog.provenance.json").read_text())
    movies = [item for item in catalog.items if item.domain == "movies"]
    assert len(movies) == provenance["movies"]["kept"] > 2900
    assert provenance["movies"]["licence"] == "BSD-3-Clause" and provenance["movies"]["version"] == "3.2.1"
    assert all(item.source.startswith("vega-datasets 3.2.1") for item in movies)
    assert {item.source for item in catalog.items if item.domain != "movies"} == {ILLUSTRATIVE}
    titles = {item.title for item in movies}
    assert {"Hotel Rwanda", "Airplane!", "Titanic"} <= titles
    rows = [catalog.index[i.id] for i in movies]
    assert 0.0 < catalog.quality[rows].min() < catalog.quality[rows].max() < 1.0  # the ratings' prior varies


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("Bad Id,T,songs,c,t,0,0,0,0,0,0,0", "line 3: id 'Bad Id'"),
        ("x-1,T,songs,c,t,0,0,0,0,0,0,0", "line 3: duplicate id"),
        ("x-2,T,podcasts,c,t,0,0,0,0,0,0,0", "line 3: domain 'podcasts'"),
        ("x-2,T,songs,c,t,0,0,0,1.5,0,0,0", "line 3: affinities must be in 0..1"),
        ("x-2,T,songs,c,t,0,0,zero,0,0,0,0", "line 3: affinities and quality must be numbers"),
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


@pytest.mark.parametrize(("quality", "ok"), [("0.7", True), ("", True), ("1.5", False), ("nan", False)])
def test_catalog_quality_column_is_validated(tmp_path: Path, quality: str, ok: bool) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("id,title,domain,category,tags,source,quality," + ",".join(LABELS)
                    + f"\nx-1,T,songs,c,t,mine,{quality},0,0,0,0,0,0,0\n")  # fmt: skip
    if ok:
        assert load_catalog(path).quality[0] == pytest.approx(float(quality or 0.5))
    else:
        with pytest.raises(CatalogError, match="line 2: quality must be in 0..1"):
            load_catalog(path)


def test_ranking_uses_the_probability_vector_and_caps_categories() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    posterior = prior(catalog)

    def songs(p: dict[str, float]) -> list[str]:
        ranked = rank(catalog, align(p, catalog.labels), posterior, ["songs"], 6, np.random.default_rng(0))
        return [r.item.id for r in ranked["songs"]]

    sad, happy, mixed = songs({"sad": 1.0}), songs({"happy": 1.0}), songs({"sad": 0.5, "happy": 0.5})
    assert len(sad) == 6 and sad != happy and mixed not in (sad, happy)
    categories = [catalog.items[catalog.index[i]].category for i in sad]
    assert max(categories.count(c) for c in categories) <= PER_CATEGORY_CAP


def test_ranking_is_deterministic_with_a_seed_and_propensities_are_probabilities() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    args = (catalog, align({"fear": 1.0}, catalog.labels), prior(catalog), list(DOMAINS), 5)
    first = rank(*args, np.random.default_rng(3))
    assert first == rank(*args, np.random.default_rng(3))
    assert all(0.0 < r.propensity <= 1.0 for rows in first.values() for r in rows)


def test_select_keeps_the_cap_even_when_one_category_fills_the_top() -> None:
    scores = np.arange(1000, dtype=float)  # the 900 best all in category 0
    categories = np.where(np.arange(1000) >= 100, 0, np.arange(1000) % 7 + 1)
    chosen = select(scores, categories, 5, cap=2)
    assert [int(categories[j]) for j in chosen].count(0) == 2 and len(chosen) == 5
    assert chosen[:2] == [999, 998]


def test_reasons_name_the_emotion_that_carries_the_score() -> None:
    """A face 0.55 sad / 0.45 happy: an upbeat song is there for the happy part, a ballad for the sad part."""
    catalog = load_catalog(DEFAULT_CATALOG)
    posterior = prior(catalog)
    p = align({"sad": 0.55, "happy": 0.45}, catalog.labels)
    pop, ballad = catalog.index["song-upbeat-pop-01"], catalog.index["song-soulful-ballads-01"]
    expected = "upbeat pop: a match for the happy side of your expression (45%)"
    assert reason(catalog, pop, p, posterior, False) == expected
    assert reason(catalog, ballad, p, posterior, False) == "soulful ballads: a match for a sad mood"
    assert carriers(np.array([0.0, 0.0, 0.5, 0.5])) == [2, 3]


def test_every_label_and_category_renders_a_grammatical_reason() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    posterior = prior(catalog)
    first_of_category = {item.category: row for row, item in enumerate(catalog.items)}
    rng = np.random.default_rng(0)
    vectors = [np.eye(7)[i] for i in range(7)] + [np.full(7, 1 / 7)] + list(rng.dirichlet([0.3] * 7, size=20))
    texts = {reason(catalog, row, v, posterior, unclear) for row in first_of_category.values() for v in vectors
             for unclear in (False, True)}  # fmt: skip
    for text in texts:
        assert not re.search(r"\ba [aeiou]|\ban [^aeiou“]|  |\bsuits\b|\bdisgust\b|\bfear\b|\bsurprise\b", text), text
        assert text == text.strip() and text.split(":")[0] in {c.replace("-", " ") for c in first_of_category}
    assert any("an angry mood" in t for t in texts) and any("a disgusted mood" in t for t in texts)
    assert any("no clear emotion" in t for t in texts)
    assert set(LABELS) <= set(ADJECTIVES)


def test_json_recommendations_log_impressions_and_feedback_changes_later_rankings(
    client: TestClient, settings: Settings
) -> None:
    first = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs", "movies"], "k": 5})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["emotion"] == {"label": "sad", "probabilities": dict.fromkeys(LABELS, 0.0) | {"sad": 1.0},
                               "source": "emotion", "uncertain": False}  # fmt: skip
    songs = body["domains"]["songs"]
    assert all(s["illustrative"] and s["source"] == "illustrative" for s in songs)
    assert not any(m["illustrative"] for m in body["domains"]["movies"])
    with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as db:  # the server logged what it showed
        logged = db.execute("SELECT item_id, domain, position, propensity, miss_weight FROM recommended_items "
                            "WHERE recommendation_id = ? ORDER BY domain, position",
                            (body["recommendation_id"],)).fetchall()  # fmt: skip
    expected = [(s["item_id"], "songs", i) for i, s in enumerate(songs)]
    assert [(r[0], r[1], r[2]) for r in logged if r[1] == "songs"] == expected
    assert all(0 < r[3] <= 1 for r in logged) and logged[0][4] == 1.0 and logged[4][4] == pytest.approx(1 / np.log2(6))
    target = songs[-1]["item_id"]  # many people who look sad like the song ranked last (likes only, as the page sends)
    for _ in range(40):
        rec = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs"], "k": 20}).json()
        if target in [s["item_id"] for s in rec["domains"]["songs"]]:
            response = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                         "item_id": target, "event": "like",
                                                         "session_id": rec["session_id"]})  # fmt: skip
            assert response.status_code == 201 and response.json() == {**response.json(), "recorded": True,
                                                                         "counted": True}  # fmt: skip
    later = client.post("/v1/recommendations", json={"emotion": "sad", "domains": ["songs"], "k": 5}).json()
    assert later["domains"]["songs"][0]["item_id"] == target
    assert "people who looked sad liked it" in later["domains"]["songs"][0]["reason"]
    metrics = client.get("/metrics").text
    assert 'emotorch_feedback_events_total{domain="songs",emotion="sad",event="like"}' in metrics


def test_a_uniform_vector_is_answered_as_uncertain(client: TestClient) -> None:
    body = client.post("/v1/recommendations", json={"probabilities": dict.fromkeys(LABELS, 1.0), "k": 2}).json()
    assert body["emotion"]["label"] == "uncertain" and body["emotion"]["uncertain"] is True
    assert all("no clear emotion" in item["reason"] for rows in body["domains"].values() for item in rows)
    clear = client.post("/v1/recommendations", json={"probabilities": {"happy": 0.6, "sad": 0.4}, "k": 1}).json()
    assert clear["emotion"]["uncertain"] is False


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
                                                    "item_id": "song-upbeat-pop-01", "event": "click",
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
    assert (replayed.status_code, replayed.json()) == (200, {"recorded": False, "counted": False,
                                                             "event_id": stored.json()["event_id"]})  # fmt: skip


def test_image_recommendations_need_consent_even_without_a_model(client: TestClient) -> None:
    response = client.post("/v1/recommendations", files={"image": ("f.png", b"x")}, data={"k": "3"})
    assert response.status_code == 422 and "consent" in response.json()["detail"]


def test_learned_rankings_survive_a_gateway_restart(settings: Settings) -> None:
    def top_song(client: TestClient) -> str:
        body = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 1}).json()
        return str(body["domains"]["songs"][0]["item_id"])

    with TestClient(create_app(settings)) as client:
        before = top_song(client)
        rec = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 20}).json()
        favourite = rec["domains"]["songs"][5]["item_id"]  # shown, but not at the top
        for _ in range(30):  # 30 people shown fear songs: each likes the favourite and dismisses two others
            rec = client.post("/v1/recommendations", json={"emotion": "fear", "domains": ["songs"], "k": 20}).json()
            songs = [song["item_id"] for song in rec["domains"]["songs"]]
            liked = [(favourite, "like")] if favourite in songs else []
            for item, event in [*liked, *((s, "dismiss") for s in songs[:2] if s != favourite)]:
                response = client.post("/v1/feedback", json={"recommendation_id": rec["recommendation_id"],
                                                             "item_id": item, "event": event,
                                                             "session_id": rec["session_id"]})  # fmt: skip
                assert response.status_code == 201
        learned = top_song(client)
    assert learned == favourite != before
    with TestClient(create_app(settings)) as restarted:  # a new process on the same database
        assert top_song(restarted) == favourite


def test_the_catalog_route_names_every_domain_once_with_its_title_and_counts(client: TestClient) -> None:
    """The demo page's headings and the API's domain list come from gateway/vocabulary.py, through this route."""
    catalog = load_catalog(DEFAULT_CATALOG)
    body = client.get("/v1/catalog").json()
    assert [d["name"] for d in body["domains"]] == list(DOMAINS) == list(DOMAIN_TITLES)
    for domain in body["domains"]:
        assert domain["title"] == DOMAIN_TITLES[domain["name"]]
        assert domain["items"] == len(catalog.in_domain(domain["name"])) == sum(domain["sources"].values()) > 0
    movies = next(d for d in body["domains"] if d["name"] == "movies")
    assert ILLUSTRATIVE not in movies["sources"]  # real films, with their own source
    assert set(next(d for d in body["domains"] if d["name"] == "songs")["sources"]) == {ILLUSTRATIVE}
    body_schema = client.get("/openapi.json").json()["paths"]["/v1/recommendations"]["post"]["requestBody"]
    domains = body_schema["content"]["application/json"]["schema"]["properties"]["domains"]
    assert domains["maxItems"] == len(DOMAINS) and domains["items"]["enum"] == list(DOMAINS)
