"""The Chroma collections that hold the chunks, one per audience, with our own embeddings.

Each audience's chunks live in a collection of their own, so a requester's search queries
only the collections of the audiences they may read, and costs what a search of that much
text costs. Chroma's metadata-filtered query (``where``) over one shared collection is
ten to forty times slower than an unfiltered one at 100k chunks (docs/BENCHMARKS.md).

Every collection records the embedding model it was built with. Vectors from two models
are never mixed: a writer that finds another model's collections starts clean ones, and a
reader refuses to query them until the index has been rebuilt.

An index made by an older kbot, one collection for every audience (``kbot_chunks``), is
still read (with the filtered query) until the next writer moves its vectors into the
per-audience collections; nothing is re-embedded.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from indexer.chunking import Chunk

log = logging.getLogger(__name__)
# The one collection of every audience that kbot before per-audience collections wrote.
LEGACY = "kbot_chunks"
PREFIX = "kbot_aud_"
# Chroma's defaults (ef 100, M 16) miss some true nearest chunks, and which ones changes
# from build to build, so the same question could rank differently after a re-index.
# A wider graph search costs a few milliseconds and makes answers stable.
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 200, "hnsw:search_ef": 200, "hnsw:M": 32}
# How often a reader looks for collections another process made (a new audience).
REFRESH_S = 2.0
MIGRATE_PAGE = 2000
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kbot-chroma")


class StoreError(Exception):
    """The vector store cannot be opened or queried."""


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float  # the ranking score (fused, in hybrid retrieval)
    dense: float = 0.0  # cosine similarity to the question, 1.0 is identical
    lexical: float = 0.0  # BM25 score, 0 when the chunk shares no term with the question


def collection_name(audience: str) -> str:
    """A Chroma collection name for an audience: readable, and unique by its hash (Chroma
    allows only ``[a-zA-Z0-9._-]`` and 3 to 512 characters)."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", audience).strip("-")[:40] or "x"
    return f"{PREFIX}{slug}_{hashlib.sha1(audience.encode()).hexdigest()[:10]}"


class VectorStore:
    """A thin layer over the per-audience Chroma collections. Only the indexer calls the
    writing methods."""

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
        """The embedded store at ``path``, or, with ``url``, the collections on a ``chroma
        run`` server (``token`` sent as a bearer token); ``path`` is then only a name.

        A writer (``create``) finding collections built with another embedding model
        replaces them in the embedded store. On a server, where web processes on other
        machines are reading them, it refuses unless ``reindex`` (``kbot sync --reindex``)."""
        self.reindex = reindex
        import chromadb
        from chromadb.config import Settings

        self.path = path
        self.url = url
        self.embedding_model = embedding_model
        self.create = create
        self.recreated = False
        self._lock = threading.Lock()
        # audience -> collection; None is the legacy collection of every audience.
        self._by_audience: dict[str | None, Any] = {}
        self._counts: dict[str | None, int] = {}
        self._listed = 0.0
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
            self._open()
        except StoreError:
            raise
        except Exception as e:  # chromadb raises many types for a broken or absent store
            raise StoreError(f"cannot open the Chroma store at {self._where}: {e}") from e

    def _open(self) -> None:
        found = self._list()
        built_with = self._other_model(found)
        if built_with is not None:
            if not self.create or (self.url is not None and not self.reindex):
                command = "kbot sync --reindex" if self.url is not None else "kbot sync"
                raise StoreError(
                    f"the index at {self._where} was built with embedding model "
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
                self._where,
                built_with,
                self.embedding_model,
            )
            for col in found.values():
                self.client.delete_collection(col.name)
            found = {}
        self._set(found)
        if self.create and not found:
            self.recreated = True
            # The public collection is made at once, so the index records its model before
            # its first chunk (a reader of another model then refuses an empty index too).
            self._target("public")
        if self.create and None in found:
            self._migrate(found[None])

    def _list(self) -> dict[str | None, Any]:
        """kbot's collections on the client, by audience (None: the legacy one). A
        collection already open is kept (same id), so a look costs one listing."""
        known = {c.id: c for c in self._by_audience.values()}
        out: dict[str | None, Any] = {}
        for listed in self.client.list_collections():
            if listed.name != LEGACY and not listed.name.startswith(PREFIX):
                continue
            col = known.get(listed.id) or self.client.get_collection(
                listed.name, embedding_function=None
            )
            if listed.name == LEGACY:
                out[None] = col
            elif isinstance(audience := (col.metadata or {}).get("audience"), str):
                out[audience] = col
        return out

    def _other_model(self, found: dict[str | None, Any]) -> str | None:
        """The embedding model of a collection in ``found`` built with another than ours."""
        others = {str((c.metadata or {}).get("embedding_model")) for c in found.values()} - {
            self.embedding_model
        }
        return min(others) if others else None

    def _set(self, found: dict[str | None, Any]) -> None:
        counts = {a: c.count() for a, c in found.items()}
        with self._lock:
            self._by_audience, self._counts = dict(found), counts
            self._listed = time.monotonic()

    def _migrate(self, legacy: Any) -> None:
        """Move an older kbot's one collection into per-audience ones, vectors and all."""
        log.warning(
            "moving %d chunks of %s into one collection per audience (no re-embedding)",
            legacy.count(),
            self._where,
        )
        while True:
            got = legacy.get(limit=MIGRATE_PAGE, include=["documents", "metadatas", "embeddings"])
            if not got["ids"]:
                break
            groups: dict[str, list[int]] = {}
            for i, meta in enumerate(got["metadatas"]):
                groups.setdefault(str((meta or {}).get("audience", "public")), []).append(i)
            for audience, rows in groups.items():
                self._target(audience).upsert(
                    ids=[got["ids"][i] for i in rows],
                    embeddings=np.asarray(got["embeddings"], dtype=np.float32)[rows],
                    documents=[got["documents"][i] for i in rows],
                    metadatas=[got["metadatas"][i] for i in rows],
                )
            legacy.delete(ids=got["ids"])
        self.client.delete_collection(LEGACY)
        self._set(self._list())

    def _target(self, audience: str) -> Any:
        """The collection of ``audience``, made when it is the first chunk of it."""
        col = self._by_audience.get(audience)
        if col is None:
            col = self.client.get_or_create_collection(
                collection_name(audience),
                embedding_function=None,
                metadata={"embedding_model": self.embedding_model, "audience": audience, **HNSW},
            )
            with self._lock:
                self._by_audience[audience] = col
        return col

    # -- reading -------------------------------------------------------------------------

    def _collections(self, audiences: Iterable[str] | None = None) -> list[tuple[str | None, Any]]:
        """The collections to search for ``audiences`` (all of them for None), looking
        again now and then for ones another process made since (a worker's new audience,
        or the first sync on a server)."""
        if time.monotonic() - self._listed > REFRESH_S:
            try:
                found = self._list()
            except Exception as e:
                raise StoreError(f"cannot reach the Chroma store at {self._where}: {e}") from e
            built_with = self._other_model(found)
            if built_with is not None:
                raise StoreError(
                    f"the index at {self._where} is now built with embedding model "
                    f"{built_with!r}, but the config asks for {self.embedding_model!r}; "
                    "restart with the same embedding model as the index"
                )
            self._set(found)
        with self._lock:
            items = sorted(self._by_audience.items(), key=lambda kv: kv[0] or "")
        if audiences is None:
            return items
        wanted = set(audiences)
        return [(a, c) for a, c in items if a is None or a in wanted]

    @property
    def _where(self) -> str:
        return self.url or str(self.path)

    @property
    def collection(self) -> _Union | None:
        """Every collection read as one (for tools and tests that look at the whole index);
        None before the first chunk is stored."""
        cols = self._collections()
        return _Union([c for _, c in cols]) if cols else None

    def count(self) -> int:
        try:
            return sum(c.count() for _, c in self._collections())
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"cannot count the chunks at {self._where}: {e}") from e

    def share(self, audiences: Iterable[str]) -> float:
        """The share of the index that ``audiences`` may read (from the counts of the last
        look at the collections); 1.0 when unknown."""
        wanted = set(audiences)
        self._collections()
        with self._lock:
            counts = dict(self._counts)
        total = sum(counts.values())
        if total == 0 or None in counts:
            return 1.0
        return sum(n for a, n in counts.items() if a in wanted) / total

    def _each(self, audiences: Iterable[str] | None, call) -> list[Any]:
        """``call(audience, collection)`` on each collection of ``audiences``, at once when
        there are several; a collection deleted under us (a re-index) is looked up again."""
        for attempt in (0, 1):
            cols = self._collections(audiences)
            try:
                if len(cols) <= 1:
                    return [call(a, c) for a, c in cols]
                return list(_pool.map(lambda ac: call(*ac), cols))
            except Exception as e:
                if attempt == 0 and ("does not exist" in str(e) or "NotFound" in type(e).__name__):
                    self._listed = 0.0
                    continue
                raise StoreError(f"the Chroma query failed: {e}") from e
        return []

    def query(
        self, vector: np.ndarray, k: int, audiences: frozenset[str] | None = None
    ) -> list[ScoredChunk]:
        """The ``k`` nearest chunks, best first, of ``audiences`` only when given. An empty
        or missing index gives []."""
        embedding = [vector.tolist()]

        def one(audience: str | None, col: Any) -> dict:
            legacy = audience is None and audiences is not None
            return col.query(
                query_embeddings=embedding,
                n_results=k,
                where={"audience": {"$in": sorted(audiences)}} if legacy else None,
                include=["documents", "metadatas", "distances"],
            )

        out = []
        for res in self._each(audiences, one):
            for cid, text, meta, dist in zip(
                res["ids"][0],
                res["documents"][0],
                res["metadatas"][0],
                res["distances"][0],
                strict=True,
            ):
                sim = 1.0 - float(dist)
                out.append(ScoredChunk(_chunk(cid, text or "", meta or {}), sim, dense=sim))
        out.sort(key=lambda h: (-h.dense, h.chunk.id))
        return out[:k]

    def get(
        self, ids: list[str], vector: np.ndarray, audiences: frozenset[str] | None = None
    ) -> list[ScoredChunk]:
        """Chunks by id, of ``audiences`` only when given, scored by cosine similarity to
        ``vector`` (ids not found are left out)."""
        if not ids:
            return []
        out = []
        for got in self._each(
            audiences,
            lambda _, c: c.get(ids=ids, include=["documents", "metadatas", "embeddings"]),
        ):
            if not got["ids"]:
                continue
            sims = np.asarray(got["embeddings"], dtype=np.float32) @ vector.astype(np.float32)
            out += [
                ScoredChunk(_chunk(cid, text or "", meta or {}), float(sim), dense=float(sim))
                for cid, text, meta, sim in zip(
                    got["ids"], got["documents"], got["metadatas"], sims, strict=True
                )
            ]
        return out

    def chunks(self, ids: list[str]) -> list[Chunk]:
        """Chunks by id, without scores (ids not found are left out)."""
        if not ids:
            return []
        found: dict[str, Chunk] = {}
        for got in self._each(
            None, lambda _, c: c.get(ids=ids, include=["documents", "metadatas"])
        ):
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                found[cid] = _chunk(cid, text or "", meta or {})
        return [found[i] for i in ids if i in found]

    def all_chunks(self, page: int = 5000) -> Iterator[Chunk]:
        """Every stored chunk, a page at a time (for rebuilding the lexical index). The
        collections are listed afresh: a rebuild follows a sync that may have made one a
        moment ago (a first sync on a server, a new audience)."""
        self._listed = 0.0
        for _, col in self._collections():
            offset = 0
            while True:
                got = col.get(limit=page, offset=offset, include=["documents", "metadatas"])
                if not got["ids"]:
                    break
                for cid, text, meta in zip(
                    got["ids"], got["documents"], got["metadatas"], strict=True
                ):
                    yield _chunk(cid, text or "", meta or {})
                offset += len(got["ids"])

    # -- writing (indexer only) -------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return self.client.get_max_batch_size()

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Store chunks in their audience's collection. A chunk whose document moved to
        another audience leaves its old collection in the same step."""
        self._listed = 0.0  # the counts change: look again at the next read
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            groups.setdefault(c.audience, []).append(i)
        step = self.max_batch
        for audience, rows in groups.items():
            col = self._target(audience)
            for i in range(0, len(rows), step):
                part = rows[i : i + step]
                col.upsert(
                    ids=[chunks[j].id for j in part],
                    embeddings=vectors[part],
                    documents=[chunks[j].text for j in part],
                    metadatas=[_meta(chunks[j]) for j in part],
                )
            self._delete_from(
                [chunks[j].id for j in rows], [a for a in self._by_audience if a != audience]
            )

    def update_metadata(self, ids: list[str], changes: dict[str, Any]) -> None:
        """Change link/audience/title on stored chunks without re-embedding them; a new
        audience moves them to its collection, vectors and all."""
        moving_to = changes.get("audience")
        self._listed = 0.0
        step = self.max_batch
        for audience, col in list(self._by_audience.items()):
            for i in range(0, len(ids), step):
                part = ids[i : i + step]
                if moving_to is None or audience == moving_to:
                    got = col.get(ids=part, include=["metadatas"])
                    if got["ids"]:
                        metas = [{**(m or {}), **changes} for m in got["metadatas"]]
                        col.update(ids=got["ids"], metadatas=metas)
                    continue
                got = col.get(ids=part, include=["documents", "metadatas", "embeddings"])
                if not got["ids"]:
                    continue
                self._target(moving_to).upsert(
                    ids=got["ids"],
                    embeddings=np.asarray(got["embeddings"], dtype=np.float32),
                    documents=got["documents"],
                    metadatas=[{**(m or {}), **changes} for m in got["metadatas"]],
                )
                col.delete(ids=got["ids"])

    def delete(self, ids: list[str]) -> None:
        self._listed = 0.0
        self._delete_from(ids, list(self._by_audience))

    def _delete_from(self, ids: list[str], audiences: list[str | None]) -> None:
        step = self.max_batch
        for audience in audiences:
            col = self._by_audience.get(audience)
            if col is None:
                continue
            for i in range(0, len(ids), step):
                col.delete(ids=ids[i : i + step])


class _Union:
    """Several collections read as one: ``get`` and ``count`` over all of them."""

    def __init__(self, collections: list[Any]):
        self.collections = collections

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.collections[0].metadata or {})

    def count(self) -> int:
        return sum(c.count() for c in self.collections)

    def get(self, ids=None, where=None, limit=None, offset=None, include=None) -> dict:
        include = include or ["documents", "metadatas"]
        out: dict[str, list] = {"ids": [], **{k: [] for k in include}}
        for c in self.collections:
            got = c.get(ids=ids, where=where, include=include)
            out["ids"] += got["ids"]
            for k in include:
                out[k] += list(got[k]) if got[k] is not None else []
        start = offset or 0
        end = None if limit is None else start + limit
        return {k: v[start:end] for k, v in out.items()}


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
