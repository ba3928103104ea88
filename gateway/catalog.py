"""The recommendation catalog: a versioned CSV file, validated on load (a bad row is named, never skipped).

Schema (one row per item, UTF-8, header required; documented in docs/catalog.md):

    id        unique, lowercase letters, digits and dashes (e.g. movie-heat-1995)
    title     shown to the person
    domain    products | places | food | songs | movies
    category  groups similar items (diversity caps work per category; reasons name it)
    tags      ';'-separated keywords
    source    optional: where the row comes from ("illustrative" marks invented items; a package and version
              for real ones). Missing: "custom"
    quality   optional: prior quality or popularity in 0..1 (from ratings, sales, ...). Missing: 0.5
    angry, disgust, fear, happy, neutral, sad, surprise
              prior affinity of the item to each emotion, 0..1: how well it suits that mood before any
              feedback (the starting point of the learned click-through estimate). Every column that is not
              one of the named ones is an emotion's affinity.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.vocabulary import DOMAINS

DEFAULT_CATALOG = Path(__file__).with_name("data") / "catalog.csv"
ILLUSTRATIVE = "illustrative"  # the `source` of invented items, shown as such in the API and the demo page
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
FIXED_COLUMNS = ("id", "title", "domain", "category", "tags")
OPTIONAL_COLUMNS = ("source", "quality")


class CatalogError(ValueError):
    """The catalog file breaks its schema; the message names the row."""


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    domain: str
    category: str
    tags: tuple[str, ...]
    source: str = "custom"


@dataclass(frozen=True)
class Catalog:
    items: tuple[Item, ...]
    labels: tuple[str, ...]
    affinity: np.ndarray  # items x labels, prior affinity in 0..1
    index: dict[str, int]  # item id -> row
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))  # items, prior quality in 0..1
    _domains: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    category_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # items -> category

    def __post_init__(self) -> None:
        # Row lists per domain and category codes once, not per request: a 100,000-item catalog ranks in
        # milliseconds only if a request never walks every item in Python.
        if len(self.quality) != len(self.items):
            object.__setattr__(self, "quality", np.full(len(self.items), 0.5))
        domains = np.array([item.domain for item in self.items])
        for domain in DOMAINS:
            self._domains[domain] = np.flatnonzero(domains == domain)
        codes: dict[tuple[str, str], int] = {}
        object.__setattr__(self, "category_codes", np.array(
            [codes.setdefault((item.domain, item.category), len(codes)) for item in self.items], dtype=np.int64))

    def in_domain(self, domain: str) -> np.ndarray:
        """Rows of the domain's items, in catalog order."""
        return self._domains.get(domain, np.zeros(0, dtype=np.int64))


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog CSV; every column not named in the schema is an emotion's affinity."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CatalogError(f"{path}: cannot read the catalog: {e}") from e
    reader = csv.DictReader(text.splitlines())
    header = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in FIXED_COLUMNS if c not in header]
    labels = tuple(c for c in header if c not in FIXED_COLUMNS + OPTIONAL_COLUMNS)
    if missing or not labels:
        raise CatalogError(f"{path}: missing column(s) {missing or ['<one affinity column per emotion>']}")
    items: list[Item] = []
    rows: list[list[float]] = []
    quality: list[float] = []
    index: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        item, affinity, q = _parse_row(row, labels, f"{path.name} line {line}")
        if item.id in index:
            raise CatalogError(f"{path.name} line {line}: duplicate id {item.id!r}")
        index[item.id] = len(items)
        items.append(item)
        rows.append(affinity)
        quality.append(q)
    if not items:
        raise CatalogError(f"{path}: the catalog has no items")
    return Catalog(tuple(items), labels, np.array(rows, dtype=np.float64), index, np.array(quality))


def _parse_row(row: dict[str, str], labels: tuple[str, ...], where: str) -> tuple[Item, list[float], float]:
    item_id = (row["id"] or "").strip()
    if not _ID.match(item_id):
        raise CatalogError(f"{where}: id {item_id!r} must be lowercase letters, digits and dashes")
    if row["domain"] not in DOMAINS:
        raise CatalogError(f"{where}: domain {row['domain']!r} is not one of {', '.join(DOMAINS)}")
    if not (row["title"] or "").strip() or not (row["category"] or "").strip():
        raise CatalogError(f"{where}: title and category must not be empty")
    try:
        affinity = [float(row[label]) for label in labels]
        quality = float(row.get("quality") or 0.5)
    except (TypeError, ValueError) as e:
        raise CatalogError(f"{where}: affinities and quality must be numbers in 0..1 ({e})") from e
    if not all(0.0 <= a <= 1.0 for a in affinity):
        raise CatalogError(f"{where}: affinities must be in 0..1, got {affinity}")
    if not (math.isfinite(quality) and 0.0 <= quality <= 1.0):
        raise CatalogError(f"{where}: quality must be in 0..1, got {quality}")
    tags = tuple(t.strip() for t in (row["tags"] or "").split(";") if t.strip())
    source = (row.get("source") or "").strip() or "custom"
    item = Item(item_id, row["title"].strip(), row["domain"], row["category"].strip(), tags, source)
    return item, affinity, quality
