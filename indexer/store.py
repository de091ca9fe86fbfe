"""The Chroma collection that holds every chunk, with our own embeddings.

The collection records the embedding model it was built with. Vectors from two models are
never mixed: a writer that finds another model's collection starts a clean one, and a
reader refuses to query it until it has been re-indexed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from indexer.chunking import Chunk

log = logging.getLogger(__name__)
COLLECTION = "kbot_chunks"
# Chroma's defaults (ef 100, M 16) miss some true nearest chunks, and which ones changes
# from build to build, so the same question could rank differently after a re-index.
# A wider graph search costs a few milliseconds and makes answers stable.
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 200, "hnsw:search_ef": 200, "hnsw:M": 32}


class StoreError(Exception):
    """The vector store cannot be opened or queried."""


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float  # the ranking score (fused, in hybrid retrieval)
    dense: float = 0.0  # cosine similarity to the question, 1.0 is identical
    lexical: float = 0.0  # BM25 score, 0 when the chunk shares no term with the question


class VectorStore:
    """A thin layer over one Chroma collection. Only the indexer calls the writing methods."""

    def __init__(
        self,
        path: Path,
        embedding_model: str,
        *,
        create: bool,
        url: str | None = None,
        token: str | None = None,
        reindex: bool = False,
    ):
        """The embedded store at ``path``, or, with ``url``, the collection on a ``chroma
        run`` server (``token`` sent as a bearer token); ``path`` is then only a name.

        A writer (``create``) finding the collection built with another embedding model
        replaces it in the embedded store. On a server, where web processes on other
        machines are reading it, it refuses unless ``reindex`` (``kbot sync --reindex``)."""
        self.reindex = reindex
        import chromadb
        from chromadb.config import Settings

        self.path = path
        self.url = url
        self.embedding_model = embedding_model
        self.recreated = False
        where = url or str(path)
        try:
            settings = Settings(anonymized_telemetry=False)
            if url is not None:
                u = urlsplit(url)
                self.client = chromadb.HttpClient(
                    host=u.hostname or "127.0.0.1",
                    port=u.port or (443 if u.scheme == "https" else 8000),
                    ssl=u.scheme == "https",
                    headers={"Authorization": f"Bearer {token}"} if token else None,
                    settings=settings,
                )
            else:
                path.mkdir(parents=True, exist_ok=True)
                self.client = chromadb.PersistentClient(path=str(path), settings=settings)
            self.collection = self._open(create)
        except StoreError:
            raise
        except Exception as e:  # chromadb raises many types for a broken or absent store
            raise StoreError(f"cannot open the Chroma store at {where}: {e}") from e

    def _open(self, create: bool):  # -> chromadb Collection
        existing = {c.name for c in self.client.list_collections()}
        if COLLECTION in existing:
            col = self.client.get_collection(COLLECTION, embedding_function=None)
            built_with = (col.metadata or {}).get("embedding_model")
            if built_with == self.embedding_model:
                return col
            if not create or (self.url is not None and not self.reindex):
                command = "kbot sync --reindex" if self.url is not None else "kbot sync"
                raise StoreError(
                    f"the index at {self.url or self.path} was built with embedding model "
                    f"{built_with!r}, but the config asks for {self.embedding_model!r}; run "
                    f"`{command}` to re-index"
                    + (
                        " (every web process finds it empty until that sync ends)"
                        if self.url is not None
                        else ""
                    )
                )
            log.warning(
                "re-indexing %s: built with %r, the config asks for %r",
                self.url or self.path,
                built_with,
                self.embedding_model,
            )
            self.client.delete_collection(COLLECTION)
        elif not create:
            return None
        self.recreated = True
        return self.client.create_collection(
            COLLECTION,
            embedding_function=None,
            metadata={"embedding_model": self.embedding_model, **HNSW},
        )

    # -- reading -------------------------------------------------------------------------

    def _absent(self) -> bool:
        """No collection yet. On a server another process (the worker) may create it after
        this one started, so a reader looks again rather than staying empty until restart."""
        if self.collection is None and self.url is not None:
            try:
                self.collection = self._open(create=False)
            except StoreError:
                raise
            except Exception as e:
                raise StoreError(f"cannot reach the Chroma server at {self.url}: {e}") from e
        return self.collection is None

    def count(self) -> int:
        return 0 if self._absent() else self.collection.count()

    def query(
        self, vector: np.ndarray, k: int, audiences: frozenset[str] | None = None
    ) -> list[ScoredChunk]:
        """The ``k`` nearest chunks, best first, of ``audiences`` only when given (that
        filtered query is much slower). An empty or missing index gives []."""
        if self._absent():
            return []
        where = {"audience": {"$in": sorted(audiences)}} if audiences is not None else None
        try:
            res = self.collection.query(
                query_embeddings=[vector.tolist()],
                n_results=k,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as e:
            raise StoreError(f"the Chroma query failed: {e}") from e
        out = []
        for cid, text, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,
        ):
            sim = 1.0 - float(dist)
            out.append(ScoredChunk(_chunk(cid, text or "", meta or {}), sim, dense=sim))
        return out

    def get(self, ids: list[str], vector: np.ndarray) -> list[ScoredChunk]:
        """Chunks by id, scored by cosine similarity to ``vector`` (ids not found are left out)."""
        if self._absent() or not ids:
            return []
        try:
            got = self.collection.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        except Exception as e:
            raise StoreError(f"the Chroma lookup failed: {e}") from e
        sims = np.asarray(got["embeddings"], dtype=np.float32) @ vector.astype(np.float32)
        return [
            ScoredChunk(_chunk(cid, text or "", meta or {}), float(sim), dense=float(sim))
            for cid, text, meta, sim in zip(
                got["ids"], got["documents"], got["metadatas"], sims, strict=True
            )
        ]

    def chunks(self, ids: list[str]) -> list[Chunk]:
        """Chunks by id, without scores (ids not found are left out)."""
        if self._absent() or not ids:
            return []
        try:
            got = self.collection.get(ids=ids, include=["documents", "metadatas"])
        except Exception as e:
            raise StoreError(f"the Chroma lookup failed: {e}") from e
        return [
            _chunk(cid, text or "", meta or {})
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]

    def all_chunks(self, page: int = 5000) -> Iterator[Chunk]:
        """Every stored chunk, a page at a time (for rebuilding the lexical index)."""
        if self._absent():
            return
        offset = 0
        while True:
            got = self.collection.get(limit=page, offset=offset, include=["documents", "metadatas"])
            if not got["ids"]:
                return
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                yield _chunk(cid, text or "", meta or {})
            offset += len(got["ids"])

    # -- writing (indexer only) -------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return self.client.get_max_batch_size()

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        step = self.max_batch
        for i in range(0, len(chunks), step):
            part = chunks[i : i + step]
            self.collection.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[i : i + step],
                documents=[c.text for c in part],
                metadatas=[_meta(c) for c in part],
            )

    def update_metadata(self, ids: list[str], changes: dict[str, Any]) -> None:
        """Change link/audience/title on stored chunks without re-embedding them."""
        step = self.max_batch
        for i in range(0, len(ids), step):
            part = ids[i : i + step]
            got = self.collection.get(ids=part, include=["metadatas"])
            metas = [{**(m or {}), **changes} for m in got["metadatas"]]
            self.collection.update(ids=got["ids"], metadatas=metas)

    def delete(self, ids: list[str]) -> None:
        step = self.max_batch
        for i in range(0, len(ids), step):
            self.collection.delete(ids=ids[i : i + step])


def _meta(c: Chunk) -> dict[str, Any]:
    return {
        "connector": c.connector,
        "doc_id": c.doc_id,
        "index": c.index,
        "title": c.title,
        "url": c.url,
        "audience": c.audience,
        "heading": "\x1f".join(c.heading_path),
        "last_modified": c.last_modified.isoformat(),
    }


def _chunk(cid: str, text: str, m: dict[str, Any]) -> Chunk:
    return Chunk(
        id=cid,
        connector=str(m.get("connector", "")),
        doc_id=str(m.get("doc_id", "")),
        index=int(m.get("index", 0)),
        text=text,
        heading_path=tuple(str(m.get("heading", "")).split("\x1f")),
        title=str(m.get("title", "")),
        url=str(m.get("url", "")),
        audience=str(m.get("audience", "public")),
        last_modified=datetime.fromisoformat(
            str(m.get("last_modified", "1970-01-01T00:00:00+00:00"))
        ),
    )
