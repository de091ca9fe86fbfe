"""Leads' curations: pin a document for a question and its close paraphrases (a "best
bet"), or suppress one for them.

A curation applies to a question whose embedding is within ``feedback.close`` of the
curated question's (or that is the same question, words and case aside). A pinned
document is put first when the asker may see it; a suppressed one is left out, for those
questions only. A curation whose document is no longer indexed is listed as broken and
ignored in ranking. Removing one keeps its row, with who removed it and when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import Database
from db.models import Curation, IndexedDocument, utcnow

log = logging.getLogger(__name__)

ACTIONS = ("pin", "suppress")
# How often a process looks again at the curations table (another process's changes).
REFRESH_S = 5.0


class CurationError(ValueError):
    """The curation cannot be made or changed as asked (unknown document, bad action)."""


def normalized(question: str) -> str:
    return " ".join(question.lower().split())


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(data: bytes | None) -> np.ndarray | None:
    return None if not data else np.frombuffer(data, dtype=np.float32)


@dataclass(frozen=True)
class CurationView:
    """One curation as lists and reports show it."""

    id: int
    action: str
    question: str
    connector: str
    path: str
    title: str | None  # None: the document is no longer indexed (broken)
    created_by: str
    created_at: datetime
    query_id: str | None
    removed_by: str | None = None
    removed_at: datetime | None = None

    @property
    def broken(self) -> bool:
        return self.title is None

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "question": self.question,
            "connector": self.connector,
            "path": self.path,
            "title": self.title,
            "broken": self.broken,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "query_id": self.query_id,
            "removed_by": self.removed_by,
            "removed_at": self.removed_at.isoformat() if self.removed_at else None,
        }


@dataclass(frozen=True)
class Match:
    """An active curation that applies to a question."""

    id: int
    action: str
    connector: str
    path: str
    similarity: float  # the questions' cosine; 1.0 for the same question


class Curations:
    """Make, list and undo curations, and find the ones that apply to a question."""

    def __init__(
        self,
        db: Database,
        embed: Callable[[str], np.ndarray],
        close: float = 0.7,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.db = db
        self.embed = embed
        self.close = close
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._active: list[tuple[int, str, str, str, str, np.ndarray | None]] = []

    def add(
        self,
        action: str,
        question: str,
        connector: str,
        path: str,
        by: str,
        query_id: str | None = None,
    ) -> CurationView:
        """Pin or suppress ``connector``:``path`` for ``question``; the document must be in
        the index. Making the same active curation again returns the existing one."""
        if action not in ACTIONS:
            raise CurationError(f"a curation is one of {', '.join(ACTIONS)}, not {action!r}")
        question = " ".join((question or "").split())
        if not question:
            raise CurationError("a curation needs the question it is for")
        if not (by or "").strip():
            raise CurationError("a curation needs who made it")
        vector = to_bytes(self.embed(question))

        def add(s: Session) -> int:
            if s.get(IndexedDocument, (connector, path)) is None:
                raise CurationError(
                    f"no indexed document {path!r} in connector {connector!r}; "
                    "pick one from the index (kbot ask or the reports page's search)"
                )
            for row in s.scalars(
                select(Curation).where(
                    Curation.removed_at.is_(None),
                    Curation.connector == connector,
                    Curation.path == path,
                )
            ):
                if normalized(row.question) == normalized(question):
                    if row.action == action:
                        return row.id
                    # Pinning what was suppressed (or the reverse) replaces it.
                    row.removed_at, row.removed_by = utcnow(), by
            row = Curation(
                action=action,
                question=question,
                question_vec=vector,
                connector=connector,
                path=path,
                created_by=by,
                created_at=utcnow(),
                query_id=query_id,
            )
            s.add(row)
            s.flush()
            return row.id

        made = self.db.write(add, "save the curation")
        self.invalidate()
        return self.get(made)

    def remove(self, curation_id: int, by: str) -> CurationView:
        """Undo a curation (it stays listed as removed, with who and when)."""

        def remove(s: Session) -> None:
            row = s.get(Curation, curation_id)
            if row is None:
                raise CurationError(f"no curation with id {curation_id}")
            if row.removed_at is None:
                row.removed_at, row.removed_by = utcnow(), by

        self.db.write(remove, "remove the curation")
        self.invalidate()
        return self.get(curation_id)

    def get(self, curation_id: int) -> CurationView:
        views = self._views(select(Curation).where(Curation.id == curation_id))
        if not views:
            raise CurationError(f"no curation with id {curation_id}")
        return views[0]

    def list(self, include_removed: bool = False) -> list[CurationView]:
        """Curations, newest first; broken ones (their document is gone) included."""
        q = select(Curation).order_by(Curation.created_at.desc(), Curation.id.desc())
        if not include_removed:
            q = q.where(Curation.removed_at.is_(None))
        return self._views(q)

    def _views(self, query: Any) -> list[CurationView]:
        with self.db.session() as s:
            rows = list(s.scalars(query))
            titles = {}
            for r in rows:
                doc = s.get(IndexedDocument, (r.connector, r.path))
                titles[r.id] = doc.title if doc is not None else None
            return [
                CurationView(
                    r.id,
                    r.action,
                    r.question,
                    r.connector,
                    r.path,
                    titles[r.id],
                    r.created_by,
                    r.created_at,
                    r.query_id,
                    r.removed_by,
                    r.removed_at,
                )
                for r in rows
            ]

    def chunk_ids(self, connector: str, path: str) -> list[str]:
        """The index ids of a document's chunks, by its last sync; none when it is gone."""
        from indexer.chunking import chunk_id

        try:
            with self.db.session() as s:
                row = s.get(IndexedDocument, (connector, path))
                count = row.chunk_count if row is not None else 0
        except SQLAlchemyError as e:  # the database is away: the pin waits for it
            log.warning("cannot read the pinned document %s:%s: %s", connector, path, e)
            return []
        return [chunk_id(connector, path, i) for i in range(count)]

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None

    def _load(self) -> list[tuple[int, str, str, str, str, np.ndarray | None]]:
        with self._lock:
            now = self.clock()
            if self._loaded_at is not None and now - self._loaded_at < REFRESH_S:
                return self._active
            try:
                with self.db.session() as s:
                    rows = s.execute(
                        select(
                            Curation.id,
                            Curation.action,
                            Curation.question,
                            Curation.connector,
                            Curation.path,
                            Curation.question_vec,
                        ).where(Curation.removed_at.is_(None))
                    ).all()
            except SQLAlchemyError as e:
                # The database is away: apply the curations read last, look again later.
                log.warning("cannot read the curations, applying the last ones read: %s", e)
                self._loaded_at = now
                return self._active
            self._active = [(i, a, normalized(q), c, p, from_bytes(v)) for i, a, q, c, p, v in rows]
            self._loaded_at = now
            return self._active

    def matching(self, question: str, vector: np.ndarray) -> list[Match]:
        """The active curations for ``question`` (whose embedding is ``vector``), closest
        first. Whether their documents still exist, or the asker may see them, is the
        ranking's to check."""
        q = normalized(question)
        found = []
        for cid, action, question_n, connector, path, v in self._load():
            sim = 1.0 if question_n == q else float(np.dot(v, vector)) if v is not None else 0.0
            if sim >= self.close:
                found.append(Match(cid, action, connector, path, round(sim, 4)))
        return sorted(found, key=lambda m: (-m.similarity, m.id))
