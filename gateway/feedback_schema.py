"""Tables of the feedback store (SQLite by default, PostgreSQL in production) and how a database is opened.

recommendations      one row per answer: when, the session's digest, the coarsened probability vector, and
                     whether its impressions count toward learning (the per-session and per-client caps)
recommended_items    the impression log: every item the server returned, with its domain, position in the
                     domain's list, the propensity the sampling policy had of showing it, the miss weight it
                     contributed at serve time, and its outcome (shown, seen, dismissed, success)
events               what the client sent about an item (stored once; `counted`: whether it reached learning)
evidence             the append-only log of every change to the learned state (see gateway/learned_state.py);
                     rows of an erased session are cancelled by negated rows, both anonymised, then compacted
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)

metadata = MetaData()
recommendations = Table(
    "recommendations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", Float, nullable=False, index=True),
    # SHA-256 of the server-issued session id (never the id: a copy of the database grants no session).
    Column("session_id", String(64), nullable=True, index=True),
    Column("probabilities", Text, nullable=False),  # JSON {label: p}, coarsened to tenths
    Column("model_version", String(32), nullable=True),
    Column("counted", Boolean, nullable=True),
)
recommended_items = Table(
    "recommended_items",
    metadata,
    Column("recommendation_id", String(36), ForeignKey("recommendations.id"), primary_key=True),
    Column("item_id", String(80), primary_key=True),
    Column("domain", String(16), nullable=False),
    Column("position", Integer, nullable=False),  # 0-based, within the domain's list
    Column("propensity", Float, nullable=True),
    Column("miss_weight", Float, nullable=True),  # counted at serve time; 0 when the impressions were not counted
    Column("outcome", String(16), nullable=True),
    Column("vote_counted", Boolean, nullable=True),
)
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recommendation_id", String(36), ForeignKey("recommendations.id"), nullable=False, index=True),
    Column("item_id", String(80), nullable=False),
    Column("event", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("counted", Boolean, nullable=True),
    UniqueConstraint("recommendation_id", "item_id", "event"),  # a replayed event is stored once
)
evidence = Table(
    "evidence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recommendation_id", String(36), nullable=True, index=True),  # NULL once erased (anonymised)
    Column("item_id", String(80), nullable=False),
    Column("served_at", Float, nullable=False),  # the recommendation's time: evidence decays from it
    Column("probabilities", Text, nullable=False),
    Column("successes", Float, nullable=False),
    Column("failures", Float, nullable=False),
    Column("erased_at", Float, nullable=True, index=True),  # cancelled pairs are compacted after a while
)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings: WAL, durable commits, a wait instead of 'database is locked'."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer; survives a crash
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged event is on disk
    cursor.execute("PRAGMA busy_timeout=10000")  # wait for another writer instead of failing
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-2048")  # 2 MiB page cache per pooled connection: bounded memory
    cursor.close()


def create_schema(engine: Engine) -> None:
    """Create missing tables, indexes and (for a database made by an earlier version) missing columns."""
    metadata.create_all(engine)
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:  # every added column is nullable: no rewrite of old rows
                kind = column.type.compile(engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        for index in table.indexes:
            index.create(engine, checkfirst=True)
