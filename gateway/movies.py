"""Build step: the catalog's movies from the `vega-datasets` npm tarball (never fetched at run time).

    npm pack vega-datasets@3.2.1            # once, at build time (the Makefile's `catalog` target)
    python -m gateway.movies vega-datasets-3.2.1.tgz gateway/data/catalog.csv

reads `package/data/movies.json` (real films: title, major genre, MPAA rating, release date, IMDB rating and
votes) and the package's name, version and licence from the tarball, keeps the other domains' rows of the
existing catalog (illustrative, and marked so), and writes the catalog plus `catalog.provenance.json` beside it.

Affinity rule (GENRE_AFFINITY), one row per major genre; films without a genre are left out. It encodes the
direction of mood-management research, not figures measured in it: people pick media that repair a bad mood
and keep a good one (Zillmann 1988, "Mood management through communication choices", American Behavioral
Scientist 31(3)); understimulated viewers seek exciting content and stressed ones calming content (Bryant &
Zillmann 1984, "Using television to alleviate boredom and stress", J. Broadcasting 28(1)); sad viewers often
prefer sad, tender drama rather than comedy (Oliver 2008, "Tender affective states as predictors of
entertainment preference", J. Communication 58(1)). Here neutral is read as understimulated, angry and fearful
as stressed. The numbers are this project's encoding and are meant to be replaced by what feedback shows.
Quality prior: the IMDB rating shrunk toward the mean by its vote count (a Bayesian average with
QUALITY_PRIOR_VOTES pseudo-votes), scaled from the 1..10 scale to 0..1.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

from gateway.catalog import ILLUSTRATIVE, load_catalog

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# major genre -> (category, affinity per label in LABELS order)
GENRE_AFFINITY: dict[str, tuple[str, tuple[float, ...]]] = {
    "Comedy": ("comedy", (0.6, 0.6, 0.6, 0.8, 0.7, 0.6, 0.6)),
    "Romantic Comedy": ("romantic-comedy", (0.4, 0.5, 0.6, 0.8, 0.6, 0.6, 0.6)),
    "Black Comedy": ("black-comedy", (0.5, 0.5, 0.3, 0.6, 0.6, 0.3, 0.6)),
    "Drama": ("drama", (0.3, 0.4, 0.3, 0.4, 0.6, 0.8, 0.4)),
    "Action": ("action", (0.4, 0.4, 0.3, 0.7, 0.8, 0.4, 0.8)),
    "Adventure": ("adventure", (0.5, 0.5, 0.4, 0.8, 0.8, 0.5, 0.8)),
    "Thriller/Suspense": ("thriller", (0.3, 0.3, 0.2, 0.5, 0.7, 0.2, 0.7)),
    "Horror": ("horror", (0.2, 0.2, 0.1, 0.4, 0.5, 0.1, 0.6)),
    "Musical": ("musical", (0.6, 0.5, 0.6, 0.8, 0.5, 0.6, 0.5)),
    "Documentary": ("documentary", (0.5, 0.6, 0.5, 0.5, 0.7, 0.4, 0.6)),
    "Western": ("western", (0.4, 0.4, 0.4, 0.5, 0.7, 0.4, 0.5)),
    "Concert/Performance": ("concert-film", (0.6, 0.5, 0.5, 0.8, 0.6, 0.5, 0.6)),
}
QUALITY_PRIOR_VOTES = 5000.0  # a film with this many votes is trusted halfway between its rating and the mean
RULE = "affinity from the major genre (gateway/movies.py GENRE_AFFINITY, after mood-management research); " \
       "quality = IMDB rating shrunk to the mean by 5,000 pseudo-votes, scaled 1..10 -> 0..1; films without " \
       "a major genre or a title are left out"  # fmt: skip
_YEAR = re.compile(r"(\d{4})$")


def read_tarball(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The films and the package.json of an `npm pack` tarball of vega-datasets."""
    with tarfile.open(path, "r:gz") as tar:
        package = json.load(_member(tar, "package/package.json"))
        films = json.load(_member(tar, "package/data/movies.json"))
    if package.get("name") != "vega-datasets" or not isinstance(films, list):
        raise ValueError(f"{path} is not a vega-datasets tarball with data/movies.json")
    return films, package


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} is missing from the tarball")
    return io.BufferedReader(handle)  # type: ignore[arg-type]


def movie_rows(films: list[dict[str, Any]], source: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Catalog rows for the films that have a genre and a title, and counts of what was left out and why."""
    ratings = [float(f["IMDB Rating"]) for f in films if _rating(f) is not None]
    mean = sum(ratings) / len(ratings)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    skipped = {"no major genre": 0, "no title": 0}
    for film in films:
        title = str(film.get("Title") or "").strip()
        genre = film.get("Major Genre")
        if genre not in GENRE_AFFINITY:
            skipped["no major genre"] += 1
            continue
        if not title:
            skipped["no title"] += 1
            continue
        category, affinity = GENRE_AFFINITY[genre]
        year = _YEAR.search(str(film.get("Release Date") or ""))
        rating, votes = _rating(film), float(film.get("IMDB Votes") or 0)
        prior_votes = QUALITY_PRIOR_VOTES
        shrunk = mean if rating is None else (votes * rating + prior_votes * mean) / (votes + prior_votes)
        item_id = _unique_id(title, year.group(1) if year else "", seen)
        decade = f"{year.group(1)[:3]}0s" if year else ""
        tags = [genre.lower(), *(decade,) * bool(decade),
                *(f"rated {film['MPAA Rating']}",) * bool(film.get("MPAA Rating"))]  # fmt: skip
        rows.append({"id": item_id, "title": title, "domain": "movies", "category": category, "tags": ";".join(tags),
                     "source": source, "quality": f"{(shrunk - 1.0) / 9.0:.3f}",
                     **{label: f"{a:.2f}" for label, a in zip(LABELS, affinity, strict=True)}})  # fmt: skip
    return rows, skipped


def _rating(film: dict[str, Any]) -> float | None:
    rating = film.get("IMDB Rating")
    return float(rating) if isinstance(rating, int | float) and 1.0 <= float(rating) <= 10.0 else None


def _unique_id(title: str, year: str, seen: set[str]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60].strip("-") or "untitled"
    base = f"movie-{slug}" + (f"-{year}" if year else "")
    item_id, n = base, 2
    while item_id in seen:
        item_id, n = f"{base}-{n}", n + 1
    seen.add(item_id)
    return item_id


def build(tarball: Path, catalog_path: Path) -> dict[str, Any]:
    """Rewrite the catalog's movies from the tarball (other domains kept, marked illustrative); return provenance."""
    films, package = read_tarball(tarball)
    source = f"{package['name']} {package['version']} data/movies.json ({package.get('license')})"
    movies, skipped = movie_rows(films, source)
    existing = load_catalog(catalog_path)
    header = ["id", "title", "domain", "category", "tags", "source", "quality", *existing.labels]
    others = [{"id": it.id, "title": it.title, "domain": it.domain, "category": it.category, "tags": ";".join(it.tags),
               "source": ILLUSTRATIVE, "quality": f"{existing.quality[i]:.3f}",
               **{label: f"{existing.affinity[i, j]:.2f}" for j, label in enumerate(existing.labels)}}
              for i, it in enumerate(existing.items) if it.domain != "movies"]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(others + movies)
    catalog_path.write_text(out.getvalue(), encoding="utf-8")
    load_catalog(catalog_path)  # what was written validates
    provenance = {
        "movies": {"package": package["name"], "version": package["version"], "licence": package.get("license"),
                   "file": "package/data/movies.json", "tarball_sha256": _sha256(tarball), "films": len(films),
                   "kept": len(movies), "left_out": skipped, "rule": RULE,
                   "note": "the dataset's own description says it holds known data quality issues and errors"},
        "products, places, food, songs": {"source": ILLUSTRATIVE, "items": len(others),
                                          "note": "invented titles and affinities, for demonstration only"},
    }  # fmt: skip
    catalog_path.with_name("catalog.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path, help="vega-datasets-<version>.tgz from `npm pack`")
    parser.add_argument("catalog", type=Path, help="the catalog CSV to rewrite")
    args = parser.parse_args(argv)
    provenance = build(args.tarball, args.catalog)
    sys.stdout.write(json.dumps(provenance["movies"], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
