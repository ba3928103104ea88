"""The recommendation catalog: a versioned CSV file, validated on load (a bad row is named, never skipped).

Schema (one row per item, UTF-8, header required):

    id        unique, lowercase letters, digits and dashes (e.g. song-upbeat-pop-01)
    title     shown to the person
    domain    products | places | food | songs | movies
    category  groups similar items (diversity caps work per category)
    tags      ';'-separated keywords
    angry, disgust, fear, happy, neutral, sad, surprise
              prior affinity of the item to each emotion, 0..1: how well it suits that mood before any
              feedback (the starting point of the learned click-through estimate)
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOMAINS = ("products", "places", "food", "songs", "movies")
DEFAULT_CATALOG = Path(__file__).with_name("data") / "catalog.csv"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


class CatalogError(ValueError):
    """The catalog file breaks its schema; the message names the row."""


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    domain: str
    category: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    items: tuple[Item, ...]
    labels: tuple[str, ...]
    affinity: np.ndarray  # items x labels, prior affinity in 0..1
    index: dict[str, int]  # item id -> row

    def in_domain(self, domain: str) -> list[int]:
        return [i for i, item in enumerate(self.items) if item.domain == domain]


FIXED_COLUMNS = ("id", "title", "domain", "category", "tags")


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog CSV; every column after the fixed five is an emotion's affinity."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CatalogError(f"{path}: cannot read the catalog: {e}") from e
    reader = csv.DictReader(text.splitlines())
    header = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in FIXED_COLUMNS if c not in header]
    labels = tuple(c for c in header if c not in FIXED_COLUMNS)
    if missing or not labels:
        raise CatalogError(f"{path}: missing column(s) {missing or ['<one affinity column per emotion>']}")
    items: list[Item] = []
    rows: list[list[float]] = []
    index: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path.name} line {line}"
        item_id = (row["id"] or "").strip()
        if not _ID.match(item_id):
            raise CatalogError(f"{where}: id {item_id!r} must be lowercase letters, digits and dashes")
        if item_id in index:
            raise CatalogError(f"{where}: duplicate id {item_id!r}")
        if row["domain"] not in DOMAINS:
            raise CatalogError(f"{where}: domain {row['domain']!r} is not one of {', '.join(DOMAINS)}")
        if not (row["title"] or "").strip() or not (row["category"] or "").strip():
            raise CatalogError(f"{where}: title and category must not be empty")
        try:
            affinity = [float(row[label]) for label in labels]
        except (TypeError, ValueError) as e:
            raise CatalogError(f"{where}: affinities must be numbers in 0..1 ({e})") from e
        if not all(0.0 <= a <= 1.0 for a in affinity):
            raise CatalogError(f"{where}: affinities must be in 0..1, got {affinity}")
        index[item_id] = len(items)
        tags = tuple(t.strip() for t in (row["tags"] or "").split(";") if t.strip())
        items.append(Item(item_id, row["title"].strip(), row["domain"], row["category"].strip(), tags))
        rows.append(affinity)
    if not items:
        raise CatalogError(f"{path}: the catalog has no items")
    return Catalog(tuple(items), labels, np.array(rows, dtype=np.float64), index)
