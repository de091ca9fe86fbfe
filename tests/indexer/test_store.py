"""The vector store keeps each audience's chunks in a Chroma collection of their own: a
search reads only the requester's, chunks move with their document's audience, and an
older kbot's single collection is read and then moved without re-embedding."""

from __future__ import annotations

from datetime import UTC, datetime

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from hypothesis import given, settings
from hypothesis import strategies as st

import indexer.store as store_module
from indexer.chunking import Chunk, chunk_id
from indexer.store import HNSW, LEGACY, VectorStore, _meta, collection_name

MODEL = "test-model"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def _chunks(n: int, audiences: list[str], seed: int = 0) -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(
            id=chunk_id("c", f"doc{i}.md", 0),
            connector="c",
            doc_id=f"doc{i}.md",
            index=0,
            text=f"chunk {i}",
            heading_path=("Doc",),
            title=f"Doc {i}",
            url=f"https://wiki/doc{i}",
            audience=audiences[i % len(audiences)],
            last_modified=WHEN,
        )
        for i in range(n)
    ]
    return chunks, vectors


def _names(path) -> set[str]:
    client = chromadb.PersistentClient(
        path=str(path), settings=Settings(anonymized_telemetry=False)
    )
    return {c.name for c in client.list_collections()}


def test_each_audience_is_a_collection_and_a_search_reads_only_the_requesters(tmp_path):
    chunks, vectors = _chunks(60, ["public", "sre", "finance"])
    store = VectorStore(tmp_path, MODEL, create=True)
    store.upsert(chunks, vectors)
    assert _names(tmp_path) == {collection_name(a) for a in ("public", "sre", "finance")}
    assert store.count() == 60
    assert store.share({"public"}) == pytest.approx(1 / 3)
    for v in vectors[:10]:
        seen = store.query(v, 10, audiences=frozenset({"public", "sre"}))
        assert len(seen) == 10
        assert {h.chunk.audience for h in seen} <= {"public", "sre"}
        # The merged ranking is the exact nearest neighbours of those audiences.
        allowed = [i for i, c in enumerate(chunks) if c.audience != "finance"]
        best = sorted(allowed, key=lambda i: -float(vectors[i] @ v))[:10]
        assert [h.chunk.id for h in seen] == [chunks[i].id for i in best]
        everyone = store.query(v, 5)
        assert [h.chunk.id for h in everyone] == [
            chunks[i].id for i in sorted(range(60), key=lambda i: -float(vectors[i] @ v))[:5]
        ]
    # Lookups by id stay inside the audiences asked for.
    ids = [c.id for c in chunks[:6]]
    got = store.get(ids, vectors[0], audiences=frozenset({"public"}))
    assert {h.chunk.id for h in got} == {c.id for c in chunks[:6] if c.audience == "public"}
    assert [c.id for c in store.chunks(ids)] == ids


def test_a_document_that_changes_audience_moves_with_its_vector(tmp_path):
    chunks, vectors = _chunks(9, ["public", "sre"])
    store = VectorStore(tmp_path, MODEL, create=True)
    store.upsert(chunks, vectors)
    public = frozenset({"public"})
    moved = chunks[0]  # public
    assert store.query(vectors[0], 1, audiences=public)[0].chunk.id == moved.id

    store.update_metadata([moved.id], {"audience": "sre", "title": "Moved"})
    assert store.count() == 9
    assert moved.id not in {h.chunk.id for h in store.query(vectors[0], 9, audiences=public)}
    [hit] = store.query(vectors[0], 1, audiences=frozenset({"sre"}))
    assert (hit.chunk.id, hit.chunk.audience, hit.chunk.title) == (moved.id, "sre", "Moved")
    assert hit.dense > 0.999  # the vector came along, not re-embedded

    # Re-written content in another audience replaces the old copy, never duplicates it.
    back = [Chunk(**{**moved.__dict__, "audience": "public", "text": "edited"})]
    store.upsert(back, vectors[:1])
    assert store.count() == 9
    assert [c.text for c in store.chunks([moved.id])] == ["edited"]
    assert store.query(vectors[0], 1, audiences=frozenset({"sre"}))[0].chunk.id != moved.id

    store.delete([c.id for c in chunks])
    assert store.count() == 0


def test_an_older_single_collection_index_is_read_then_moved_without_reembedding(tmp_path):
    chunks, vectors = _chunks(30, ["public", "hr"])
    client = chromadb.PersistentClient(
        path=str(tmp_path), settings=Settings(anonymized_telemetry=False)
    )
    old = client.create_collection(
        LEGACY, embedding_function=None, metadata={"embedding_model": MODEL, **HNSW}
    )
    old.upsert(
        ids=[c.id for c in chunks],
        embeddings=vectors,
        documents=[c.text for c in chunks],
        metadatas=[_meta(c) for c in chunks],
    )
    public = frozenset({"public"})
    reader = VectorStore(tmp_path, MODEL, create=False)
    before = [h.chunk.id for h in reader.query(vectors[1], 8, audiences=public)]
    assert len(before) == 8
    assert {c.audience for c in reader.chunks(before)} == {"public"}

    writer = VectorStore(tmp_path, MODEL, create=True)
    assert _names(tmp_path) == {collection_name("public"), collection_name("hr")}
    assert writer.count() == 30
    after = [h.chunk.id for h in writer.query(vectors[1], 8, audiences=public)]
    assert after == before


def test_a_reader_finds_an_audience_another_process_added(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "REFRESH_S", 0.0)
    chunks, vectors = _chunks(4, ["public"])
    writer = VectorStore(tmp_path, MODEL, create=True)
    writer.upsert(chunks, vectors)
    reader = VectorStore(tmp_path, MODEL, create=False)
    assert reader.count() == 4
    more, more_vectors = _chunks(4, ["legal"], seed=1)
    more = [Chunk(**{**c.__dict__, "id": f"x{c.id}"}) for c in more]
    writer.upsert(more, more_vectors)
    [hit] = reader.query(more_vectors[0], 1, audiences=frozenset({"legal"}))
    assert hit.chunk.id == more[0].id


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=2, max_size=2, unique=True))
def test_collection_names_are_valid_and_distinct_for_any_audience(pair):
    a, b = (collection_name(x) for x in pair)
    assert a != b
    for name in (a, b):
        assert 3 <= len(name) <= 512
        assert name[0].isalnum() and name[-1].isalnum()
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name)
