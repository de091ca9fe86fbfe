"""Hybrid retrieval: dense vectors and BM25 keywords, fused.

Dense search finds paraphrases ("scrape endpoints are unreachable" for TargetDown); BM25
finds exact identifiers the embedding model blurs (alert names, metric names, commands).
Each retriever proposes ``candidates`` chunks; every candidate gets both scores (its
cosine similarity is computed from the stored vector when only BM25 proposed it), and
the fused score ranks them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from config.models import RetrievalConfig
from indexer.embeddings import Embedder
from indexer.lexical import LexicalIndex
from indexer.store import ScoredChunk, VectorStore

RRF_K = 60


class Retriever:
    def __init__(
        self,
        config: RetrievalConfig,
        store: Callable[[], VectorStore | None],
        lexical: LexicalIndex | None,
        embedder: Embedder,
    ):
        self.config = config
        self.store = store
        self.lexical = lexical
        self.embedder = embedder

    def search(self, question: str, k: int) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``question``, best first."""
        store = self.store()
        if store is None:
            return []
        vector = self.embedder.embed([question])[0]
        mode = self.config.mode if self.lexical is not None else "dense"
        # Fusion needs a wider pool than it returns; dense-only ranking does not.
        n = k if mode == "dense" else max(self.config.candidates, k)
        dense = store.query(vector, n) if mode != "lexical" else []
        lexical = dict(self.lexical.search(question, n)) if mode != "dense" else {}
        if mode == "dense":
            return dense[:k]

        pool = {h.chunk.id: h for h in dense}
        missing = [cid for cid in lexical if cid not in pool]
        for h in store.get(missing, vector):
            pool[h.chunk.id] = h
        hits = [
            ScoredChunk(h.chunk, 0.0, dense=h.dense, lexical=lexical.get(h.chunk.id, 0.0))
            for h in pool.values()
        ]
        if mode == "lexical":
            fused = [h.lexical for h in hits]
        elif self.config.fusion == "rrf":
            fused = _rrf(hits)
        else:
            w = self.config.dense_weight
            fused = w * _minmax([h.dense for h in hits]) + (1 - w) * _minmax(
                [h.lexical for h in hits]
            )
        ranked = sorted(
            (
                ScoredChunk(h.chunk, float(f), h.dense, h.lexical)
                for h, f in zip(hits, fused, strict=True)
            ),
            key=lambda h: (-h.score, -h.dense, h.chunk.id),
        )
        return ranked[:k]


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
