"""Hybrid retrieval: dense vectors and BM25 keywords, fused.

Dense search finds paraphrases ("scrape endpoints are unreachable" for TargetDown); BM25
finds exact identifiers the embedding model blurs (alert names, metric names, commands).
Each retriever proposes ``candidates`` chunks; every candidate gets both scores (its
cosine similarity is computed from the stored vector when only BM25 proposed it), and
the fused score ranks them.

Every search is for an audience: only chunks whose connector is visible to the requester
are ever returned. Each audience's chunks are a Chroma collection of their own, so the
dense search queries only the requester's audiences' collections (indexer/store.py), and
every hit is checked again here against the connector's configured audience, which wins
over the stored one until the next sync re-labels the chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.answer.types import PUBLIC
from bot.answer.votes import audience_key
from config.models import RetrievalConfig
from indexer.chunking import Chunk
from indexer.embeddings import Embedder
from indexer.lexical import LexicalIndex, SharedLexicalIndex
from indexer.store import ScoredChunk, VectorStore
from indexer.text import identifiers, stem, terms

if TYPE_CHECKING:
    from bot.answer.curation import Curations
    from bot.answer.votes import VoteRanking

RRF_K = 60
# How many more candidates to fetch when some audiences are hidden from the requester.
OVERFETCH = 4
ALL = 10**9
# How many chunks holding a word are looked at for one the requester may see, before all.
UNUSED_FETCH = 20
# How many of a pinned document's chunks are put first when retrieval did not find it.
PINNED_CHUNKS = 3


# The audience of a chunk whose stored audience its connector no longer maps to: no
# requester has it, so the chunk is hidden until the next sync re-labels it.
RELABEL_PENDING = "\x00relabel-pending"


def named_first(question: str, hits: list[ScoredChunk]) -> list[ScoredChunk]:
    """``hits`` with the chunks of the documents ``question`` names first, in their order:
    asked "NodeFilesystemSpaceFillingUp - when is it a warning vs critical?", the runbook
    of that alert is the answer, though its neighbours (*NodeFilesystemAlmostOutOfSpace*)
    may share more of the question's other words. A document is named by an identifier
    of the question that is its title or its file name, loosely compared."""
    names = {squash(n) for n in identifiers(question)}
    if not names:
        return hits
    named = [h for h in hits if names_document(names, h.chunk)]
    if not named:
        return hits
    return named + [h for h in hits if not names_document(names, h.chunk)]


def names_document(names: set[str], chunk: Chunk) -> bool:
    """Whether ``names`` (each ``squash``-ed) hold the title or the file name of
    ``chunk``'s document."""
    return squash(chunk.title) in names or squash(chunk.file_stem) in names


def title_cover(title: str, asked: frozenset[str]) -> float:
    """The share of ``title``'s words (``terms``) that are among ``asked``."""
    words = _title_terms(title)
    return len(words & asked) / len(words) if words else 0.0


@lru_cache(maxsize=4096)
def _title_terms(title: str) -> frozenset[str]:
    return frozenset(terms(title))


def squash(name: str) -> str:
    """A name compared loosely: "KubeContainerWaiting", "Kube Container Waiting" and
    "kube-container-waiting" are one."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def visible_to(audiences: Iterable[str]) -> frozenset[str]:
    """The audiences a requester may read: theirs, and always ``public``."""
    return frozenset({PUBLIC, *audiences})


class Retriever:
    def __init__(
        self,
        config: RetrievalConfig,
        store: Callable[[], VectorStore | None],
        lexical: LexicalIndex | SharedLexicalIndex | None,
        embedder: Embedder,
        connector_audiences: Mapping[str, str | frozenset[str]] | None = None,
        votes: VoteRanking | None = None,
        curations: Curations | None = None,
    ):
        self.config = config
        # What askers' votes and leads' curations do to the fused ranking (None: nothing).
        self.votes = votes
        self.curations = curations
        # A question's embedding, once: the query log keeps it, and a follow-up searches
        # its thread's earlier question again.
        self.vector_of: Callable[[str], np.ndarray] = lru_cache(maxsize=1024)(
            lambda text: self.embedder.embed([text])[0]
        )
        self.store = store
        self.lexical = lexical
        self.embedder = embedder
        # The configured audiences of each connector. A connector with one audience wins
        # over the audience stored with a chunk, so narrowing it in config takes effect at
        # once, not at its next sync. One that maps parts of its source to audiences
        # (Confluence spaces) is judged per chunk, on the stored audience.
        self.connector_audiences = {
            name: frozenset({a}) if isinstance(a, str) else frozenset(a)
            for name, a in (connector_audiences or {}).items()
        }

    def _keywords(
        self, question: str, n: int, fetch: int, audiences: frozenset[str], share: float
    ) -> dict[str, float]:
        """The ``n`` best BM25 chunk ids the requester may see, with their scores."""

        def may_see(chunk_id: str) -> bool:
            # Chunk ids start with the connector's name. A connector no longer configured
            # is judged later, on the audience stored with its chunks.
            connector = chunk_id.split(":", 1)[0]
            return bool(self.connector_audiences.get(connector, {PUBLIC}) & audiences)

        assert self.lexical is not None
        if share < 1 / OVERFETCH:
            fetch = min(ALL, int(n / max(share, 1e-3) * 2))
        raw = self.lexical.search(question, fetch)
        hits = [(cid, s) for cid, s in raw if may_see(cid)]
        if len(hits) < n and len(raw) == fetch > n:
            # Hidden chunks crowd the top: rank the whole index (rare, and still fast).
            hits = [(cid, s) for cid, s in self.lexical.search(question, ALL) if may_see(cid)]
        return dict(hits[:n])

    def unused(self, words: list[str], audiences: frozenset[str]) -> list[str]:
        """Of ``words`` (as written), those that no chunk ``audiences`` may see holds and
        that are not one edit from a word the index holds (a misspelling): the words of a
        question about something the knowledge base never mentions ("SonarQube"). Whether
        other audiences' documents hold a word does not change the answer."""
        if self.lexical is None or not words:
            return []
        vocabulary = self.lexical.vocabulary()
        if vocabulary is None:
            return []
        audiences = visible_to(audiences)
        return [
            w
            for w in words
            if not vocabulary.near(stem(w.lower()))
            and not self._keywords(w, 1, UNUSED_FETCH, audiences, 1.0)
        ]

    def audience_of(self, chunk: Chunk) -> str:
        configured = self.connector_audiences.get(chunk.connector)
        if configured is None:
            return chunk.audience
        if len(configured) == 1:
            return next(iter(configured))
        # Stored before the mapping changed: hidden until the next sync re-labels it.
        return chunk.audience if chunk.audience in configured else RELABEL_PENDING

    def search(
        self,
        question: str,
        k: int,
        audiences: frozenset[str] = frozenset({PUBLIC}),
        notes: list[dict[str, Any]] | None = None,
    ) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``question`` that ``audiences`` may see, best first.
        What votes and curations changed is appended to ``notes``, for the trace."""
        store = self.store()
        if store is None:
            return []
        audiences = visible_to(audiences)
        vector = self.vector_of(question)
        mode = self.config.mode if self.lexical is not None else "dense"
        # Fusion needs a wider pool than it returns; dense-only ranking does not.
        n = k if mode == "dense" else max(self.config.candidates, k)
        restricted = not set().union(*self.connector_audiences.values()) <= audiences
        fetch = n * OVERFETCH if restricted else n

        def visible(hits: list[ScoredChunk]) -> list[ScoredChunk]:
            return [h for h in hits if self.audience_of(h.chunk) in audiences]

        dense: list[ScoredChunk] = []
        if mode != "lexical":
            # Only chunks whose connector's configured audience no longer matches the stored
            # one are dropped here; when they crowd the top, look further.
            want = n
            while True:
                raw = store.query(vector, want, audiences=audiences)
                dense = visible(raw)
                if len(dense) >= n or len(raw) < want or want >= n * OVERFETCH**2:
                    break
                want *= OVERFETCH
            dense = dense[:n]
        if mode == "dense":
            dense = named_first(question, dense)
            return self._adjusted(question, vector, audiences, dense, store, notes)[:k]
        lexical = self._keywords(question, n, fetch, audiences, store.share(audiences))

        pool = {h.chunk.id: h for h in dense}
        missing = [cid for cid in lexical if cid not in pool]
        for h in visible(store.get(missing, vector, audiences=audiences)):
            pool[h.chunk.id] = h
        hits = [
            ScoredChunk(h.chunk, 0.0, dense=h.dense, lexical=lexical.get(h.chunk.id, 0.0))
            for h in pool.values()
        ]
        if not hits:  # an empty index (a server no worker has synced into yet)
            return []
        if mode == "lexical":
            fused = [h.lexical for h in hits]
        elif self.config.fusion == "rrf":
            fused = _rrf(hits)
        else:
            w = self.config.dense_weight
            fused = w * _minmax([h.dense for h in hits]) + (1 - w) * _minmax(
                [h.lexical for h in hits]
            )
            if self.config.title_weight:
                # A document whose title the question puts in its own words is about it
                # (docs/EVALUATION.md, "The document first").
                asked = frozenset(terms(question))
                tw = self.config.title_weight
                covers = np.asarray([title_cover(h.chunk.title, asked) for h in hits])
                fused = (fused + tw * covers) / (1 + tw)  # still from 0 to 1
        ranked = sorted(
            (
                ScoredChunk(h.chunk, float(f), h.dense, h.lexical)
                for h, f in zip(hits, fused, strict=True)
            ),
            key=lambda h: (-h.score, -h.dense, h.chunk.id),
        )
        ranked = named_first(question, ranked)
        return self._adjusted(question, vector, audiences, ranked, store, notes)[:k]

    def _adjusted(
        self,
        question: str,
        vector: np.ndarray,
        audiences: frozenset[str],
        hits: list[ScoredChunk],
        store: VectorStore,
        notes: list[dict[str, Any]] | None,
    ) -> list[ScoredChunk]:
        """``hits`` after leads' suppressions, askers' votes, then leads' pins."""
        said: list[dict[str, Any]] = []
        matches = self.curations.matching(question, vector) if self.curations else []
        gone = {(m.connector, m.path): m for m in matches if m.action == "suppress"}
        if gone:
            present = {(h.chunk.connector, h.chunk.doc_id) for h in hits}
            hits = [h for h in hits if (h.chunk.connector, h.chunk.doc_id) not in gone]
            said += [
                {
                    "kind": "suppress",
                    "curation": m.id,
                    "connector": m.connector,
                    "path": m.path,
                    "similarity": m.similarity,
                    "applied": d in present,
                }
                for d, m in gone.items()
            ]
        if self.votes is not None:
            hits, moved = self.votes.apply(hits, vector, audience_key(audiences))
            said += moved
        for m in (m for m in matches if m.action == "pin"):
            pinned = self._pinned(m.connector, m.path, hits, vector, audiences, store)
            said.append(
                {
                    "kind": "pin",
                    "curation": m.id,
                    "connector": m.connector,
                    "path": m.path,
                    "similarity": m.similarity,
                    "applied": bool(pinned),
                }
            )
            if pinned:
                # The closest pin the asker may see leads; the rest follow in rank order.
                top = max((h.score for h in hits), default=1.0)
                ids = {h.chunk.id for h in pinned}
                hits = [ScoredChunk(h.chunk, top, h.dense, h.lexical) for h in pinned] + [
                    h for h in hits if h.chunk.id not in ids
                ]
                break
        if notes is not None:
            notes.extend(said)
        return hits

    def _pinned(
        self,
        connector: str,
        path: str,
        hits: list[ScoredChunk],
        vector: np.ndarray,
        audiences: frozenset[str],
        store: VectorStore,
    ) -> list[ScoredChunk]:
        """A pinned document's chunks closest to the question, best first; none when the
        asker may not see it or it is no longer indexed."""
        ids = self.curations.chunk_ids(connector, path) if self.curations else []
        if not ids:  # no longer indexed: the curation is broken, and ignored
            return []
        own = [h for h in hits if (h.chunk.connector, h.chunk.doc_id) == (connector, path)]
        if not own:
            got = store.get(ids, vector, audiences=audiences)
            own = sorted(
                (h for h in got if self.audience_of(h.chunk) in audiences),
                key=lambda h: -h.dense,
            )[:PINNED_CHUNKS]
        return [h for h in own if self.audience_of(h.chunk) in audiences]


def _minmax(values: list[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.zeros_like(a) if hi <= 0 else np.ones_like(a)
    return (a - lo) / (hi - lo)


def _rrf(hits: list[ScoredChunk]) -> list[float]:
    def ranks(key: Callable[[ScoredChunk], float]) -> dict[str, int]:
        order = sorted((h for h in hits if key(h) > 0), key=key, reverse=True)
        return {h.chunk.id: r for r, h in enumerate(order, 1)}

    dense, lexical = ranks(lambda h: h.dense), ranks(lambda h: h.lexical)
    return [
        sum(1.0 / (RRF_K + r[h.chunk.id]) for r in (dense, lexical) if h.chunk.id in r)
        for h in hits
    ]
