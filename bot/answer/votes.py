"""Votes in ranking: what askers said of earlier answers moves documents for the next asker.

A 👍 counts for every document its answer cited; a 👎 whose reason is ``wrong``,
``outdated`` or ``irrelevant sources`` counts against them ("not found" is a content gap,
not a verdict on the sources, and a 👎 without a reason says too little). A vote counts
for a new question when the two questions' embeddings are at least ``feedback.close``
apart in cosine, and only when both were asked with the same audiences: a vote from one
audience never changes what another is shown.

Per document, each voter counts once (their latest vote on a close question), weighted by
age: a vote's weight halves every ``half_life_days``. Below ``min_voters`` distinct
voters nothing moves. The net weight then moves the document one place per
``min_voters`` of it, at most ``max_up`` places up or ``max_down`` down, and only past
documents within ``margin`` of it in meaning: votes reorder close candidates, they never
lift an unrelated page over the right one, never push a document out of the retrieved
set, and a document nothing comes close to stays first (docs/EVALUATION.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from config.models import FeedbackConfig
from db import Database
from db.models import Feedback, QueryRecord, utcnow
from indexer.store import ScoredChunk

log = logging.getLogger(__name__)

# 👎 reasons that say the cited sources were the problem.
AGAINST = ("wrong", "outdated", "irrelevant sources")
# How often a process looks for new votes (another process's, or its own), and how
# often it reads them all again (to drop the votes of deleted answers).
REFRESH_S = 5.0
FULL_READ_S = 600.0
OVERLAP = timedelta(seconds=60)


def audience_key(audiences: Iterable[str]) -> str:
    """The requester's audiences as the query log keeps them: sorted, comma-joined."""
    return ",".join(sorted(set(audiences)))


def counts_against(reason: str | None) -> bool:
    r = (reason or "").strip().lower()
    return any(r == a or r.startswith(a + ":") for a in AGAINST)


@dataclass(frozen=True)
class DocVotes:
    """The votes on one document for one question."""

    net: float  # Σ ±weight over distinct voters
    voters: int
    up: int
    down: int

    def places(self, config: FeedbackConfig) -> int:
        """How many places the votes move the document: + up, - down."""
        if self.voters < config.min_voters:
            return 0
        steps = math.floor(abs(self.net) / config.min_voters + 1e-9)
        return min(steps, config.max_up) if self.net > 0 else -min(steps, config.max_down)


@dataclass(frozen=True)
class _Vote:
    audiences: str
    voter: str
    sign: int
    at: datetime
    docs: tuple[tuple[str, str], ...]


class VoteRanking:
    """The votes of the query log, read every few seconds, applied to a ranking."""

    def __init__(
        self,
        config: FeedbackConfig,
        db: Database,
        now: Callable[[], datetime] = utcnow,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.db = db
        self.now = now
        self.clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None  # the last look (clock)
        self._full_at: float | None = None  # the last full read (clock)
        self._since: datetime | None = None  # the newest vote seen
        # Every counting vote by (query id, voter); None: the voter's vote does not count.
        self._rows: dict[tuple[str, str], tuple[_Vote, np.ndarray] | None] = {}
        self._votes: list[_Vote] = []
        self._vectors = np.zeros((0, 0), np.float32)

    def invalidate(self) -> None:
        """Read every vote again at the next question (votes or answers were deleted)."""
        with self._lock:
            self._loaded_at = self._full_at = None

    def changed(self) -> None:
        """A vote was recorded: read the new ones at the next question."""
        with self._lock:
            self._loaded_at = None

    def _load(self) -> tuple[list[_Vote], np.ndarray]:
        with self._lock:
            now = self.clock()
            if self._loaded_at is not None and now - self._loaded_at < REFRESH_S:
                return self._votes, self._vectors
            full = self._full_at is None or now - self._full_at >= FULL_READ_S
            query = (
                select(
                    Feedback.query_id,
                    Feedback.user_id,
                    Feedback.vote,
                    Feedback.reason,
                    Feedback.updated_at,
                    QueryRecord.audiences,
                    QueryRecord.question_vec,
                    QueryRecord.citations,
                )
                .join(QueryRecord, Feedback.query_id == QueryRecord.id)
                .where(QueryRecord.question_vec.is_not(None))
            )
            if not full and self._since is not None:
                # Votes changed since the newest one seen, with a margin for commits of
                # other processes that landed out of order.
                query = query.where(Feedback.updated_at >= self._since - OVERLAP)
            try:
                with self.db.session() as s:
                    rows = s.execute(query).all()
            except SQLAlchemyError as e:
                # The database is away (a restart, a failover): rank with the votes read
                # last, and look again in REFRESH_S; the answer itself must not fail.
                log.warning("cannot read the votes, ranking with the last ones read: %s", e)
                self._loaded_at = now
                return self._votes, self._vectors
            if full:
                self._rows = {}
                self._full_at = now
            for qid, user, vote, reason, at, audiences, vec, citations in rows:
                self._since = at if self._since is None else max(self._since, at)
                docs = tuple(dict.fromkeys((c["connector"], c["path"]) for c in citations or []))
                counts = vote == "up" or counts_against(reason)
                if not counts or not docs or audiences is None:
                    self._rows[(qid, user or "")] = None
                    continue
                v = _Vote(audiences, user or "", 1 if vote == "up" else -1, at, docs)
                self._rows[(qid, user or "")] = (v, np.frombuffer(vec, dtype=np.float32))
            if full or rows:
                kept = [r for r in self._rows.values() if r is not None]
                self._votes = [v for v, _ in kept]
                self._vectors = (
                    np.vstack([vec for _, vec in kept]) if kept else np.zeros((0, 0), np.float32)
                )
            self._loaded_at = now
            return self._votes, self._vectors

    def scores(self, vector: np.ndarray, audiences: str) -> dict[tuple[str, str], DocVotes]:
        """The votes on each document for a question (embedding ``vector``) asked with
        ``audiences`` (an ``audience_key``)."""
        votes, vectors = self._load()
        if not votes or vectors.shape[1] != len(vector):
            return {}
        sims = vectors @ np.asarray(vector, dtype=np.float32)
        now = self.now()
        latest: dict[tuple[tuple[str, str], str], tuple[datetime, int]] = {}
        for v, sim in zip(votes, sims, strict=True):
            if sim < self.config.close or v.audiences != audiences:
                continue
            for doc in v.docs:
                seen = latest.get((doc, v.voter))
                if seen is None or v.at > seen[0]:
                    latest[(doc, v.voter)] = (v.at, v.sign)
        per_doc: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for (doc, _), (at, sign) in latest.items():
            age_days = max(0.0, (now - at).total_seconds() / 86400)
            weight = 0.5 ** (age_days / self.config.half_life_days)
            per_doc.setdefault(doc, []).append((weight, sign))
        return {
            doc: DocVotes(
                net=round(sum(w * s for w, s in ws), 4),
                voters=len(ws),
                up=sum(1 for _, s in ws if s > 0),
                down=sum(1 for _, s in ws if s < 0),
            )
            for doc, ws in per_doc.items()
        }

    def apply(
        self, hits: list[ScoredChunk], vector: np.ndarray, audiences: str
    ) -> tuple[list[ScoredChunk], list[dict[str, object]]]:
        """``hits`` with documents moved by their votes, and what moved, for the trace."""
        scores = self.scores(vector, audiences)
        if not scores or not hits:
            return hits, []
        return move(hits, scores, self.config)


def _doc(h: ScoredChunk) -> tuple[str, str]:
    return (h.chunk.connector, h.chunk.doc_id)


def move(
    hits: list[ScoredChunk], scores: dict[tuple[str, str], DocVotes], config: FeedbackConfig
) -> tuple[list[ScoredChunk], list[dict[str, object]]]:
    """Reorder ``hits`` by documents: each voted document moves by its ``places``, only
    past documents whose best passage is within ``config.margin`` of its own in meaning.
    A document's chunks keep their order, and its best chunk leads them."""
    # Where each document's best chunk is, documents in rank order.
    first: dict[tuple[str, str], int] = {}
    for i, h in enumerate(hits):
        first.setdefault(_doc(h), i)
    order = list(first)
    keys = {d: float(i) for i, d in enumerate(order)}
    notes: list[dict[str, object]] = []
    places_of = {d: v.places(config) for d, v in scores.items()}
    for i, d in enumerate(order):
        v = scores.get(d)
        places = places_of.get(d, 0)
        if v is None or not places:
            continue
        direction = 1 if places < 0 else -1  # +1: down the list
        moved = 0
        while moved < abs(places):
            j = i + direction * (moved + 1)
            if not 0 <= j < len(order):
                break
            other = order[j]
            # Only past a document the votes favour less (lifting) or more (lowering):
            # documents voted alike keep their order.
            if (places_of.get(other, 0) - places) * direction <= 0:
                break
            if abs(hits[first[other]].dense - hits[first[d]].dense) > config.margin:
                break
            moved += 1
        to = i + direction * moved
        if moved:
            keys[d] = to + 0.5 * direction
        notes.append(_note(d, v, i, to))
    if not any(n["from"] != n["to"] for n in notes):
        return hits, notes
    new_order = sorted(order, key=lambda d: (keys[d], first[d]))
    # The documents' best chunks take the places the best chunks had, in the new order;
    # every other chunk keeps its place, or follows its document's best chunk.
    slot = {d: first[o] for d, o in zip(new_order, order, strict=True)}

    def key(i: int) -> tuple[int, int, int]:
        d = _doc(hits[i])
        return (slot[d], 0, i) if i == first[d] else (max(i, slot[d]), 1, i)

    return [hits[i] for i in sorted(range(len(hits)), key=key)], notes


def _note(d: tuple[str, str], v: DocVotes, at: int, to: int) -> dict[str, object]:
    return {
        "kind": "votes",
        "connector": d[0],
        "path": d[1],
        "from": at + 1,
        "to": to + 1,
        "net": v.net,
        "voters": v.voters,
        "up": v.up,
        "down": v.down,
    }
