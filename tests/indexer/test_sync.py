"""Incremental sync against a real Chroma store, on small temporary copies of the corpus."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest
from sqlalchemy import select

from connectors import REGISTRY, ConnectorConfig, Document, DocumentError, build_connector
from db.models import IndexedDocument, SyncRun
from indexer.chunking import Chunker
from indexer.lock import IndexLockedError, WriterLock
from indexer.store import StoreError, VectorStore
from tests.conftest import CORPUS, make_config, need

RUNBOOKS = CORPUS / "prometheus-operator-runbooks" / "content" / "runbooks"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A mutable copy of 20 real runbooks."""
    need(RUNBOOKS.is_dir(), f"the shared corpus is missing at {CORPUS}")
    dest = tmp_path / "src"
    files = sorted(RUNBOOKS.rglob("*.md"))[:20]
    for f in files:
        target = dest / f.relative_to(RUNBOOKS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dest


def fs(name: str, path: Path, **extra) -> dict:
    return {"name": name, "type": "filesystem", "path": str(path), "schedule": "1h", **extra}


def stored_ids(rt) -> set[str]:
    return set(rt.indexer.store.collection.get(include=[])["ids"])


def expected_ids(rt, name: str) -> set[str]:
    """The chunk ids a from-scratch chunking of the source would produce."""
    cfg = rt.config.connector(name)
    chunker = Chunker(rt.config.indexer.chunk_size, rt.config.indexer.chunk_overlap)
    return {
        c.id
        for d in build_connector(cfg, rt.config.storage.data_dir).load_all()
        for c in chunker.split(d)
    }


class CountingEmbedder:
    """The real model, counting how many texts it was asked to embed."""

    def __init__(self, inner, name: str | None = None):
        self.inner = inner
        self.name = name or inner.name
        self.texts = 0

    def embed(self, texts, batch_size=64):
        self.texts += len(texts)
        return self.inner.embed(texts, batch_size)


def test_resync_applies_edits_deletes_and_additions_exactly(runtime_factory, tmp_path, source):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    [first] = rt.indexer.sync()
    assert first.ok and (first.added, first.updated, first.deleted) == (20, 0, 0)
    assert stored_ids(rt) == expected_ids(rt, "rb")
    assert first.chunks == len(stored_ids(rt))

    files = sorted(p for p in source.rglob("*.md"))
    edited, removed = files[0], files[1]
    edited.write_text(
        edited.read_text() + "\n\n## Escalation\n\nPage the storage on-call via #zz-escalate.\n"
    )
    removed.unlink()
    (source / "new").mkdir()
    (source / "new" / "BrandNewAlert.md").write_text(
        "# BrandNewAlert\n\n## Meaning\n\nA new alert.\n"
    )

    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert (second.added, second.updated, second.deleted, second.unchanged) == (1, 1, 1, 18)
    ids = stored_ids(rt)
    assert ids == expected_ids(rt, "rb")
    rel_removed = removed.relative_to(source).as_posix()
    assert not any(i.startswith(f"rb:{rel_removed}:") for i in ids)
    got = rt.indexer.store.collection.get(where={"doc_id": edited.relative_to(source).as_posix()})
    assert any("#zz-escalate" in d for d in got["documents"])


def test_no_change_resync_embeds_nothing(runtime_factory, tmp_path, source, embedder):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    counting = CountingEmbedder(embedder)
    rt.__dict__["embedder"] = counting
    rt.indexer.sync()
    assert counting.texts > 0
    counting.texts = 0
    [again] = rt.indexer.sync()
    assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 20)
    assert counting.texts == 0
    [full] = rt.indexer.sync(full=True)
    assert full.unchanged == 20 and counting.texts == 0


def test_link_change_updates_metadata_without_reembedding(
    runtime_factory, tmp_path, source, embedder
):
    cfg = make_config(tmp_path, [fs("rb", source)])
    rt = runtime_factory(cfg)
    counting = CountingEmbedder(embedder)
    rt.__dict__["embedder"] = counting
    rt.indexer.sync()
    counting.texts = 0
    rt.config.connectors[0].url_template = "https://git.example/rb/{path}"
    [res] = rt.indexer.sync(full=True)
    assert res.updated == 20 and counting.texts == 0
    metas = rt.indexer.store.collection.get(include=["metadatas"])["metadatas"]
    assert all(m["url"].startswith("https://git.example/rb/") for m in metas)


def test_mass_deletion_guard_leaves_index_as_it_was(runtime_factory, tmp_path, source):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    rt.indexer.sync()
    before = stored_ids(rt)
    for f in sorted(source.rglob("*.md"))[:15]:
        f.unlink()
    [res] = rt.indexer.sync()
    assert not res.ok and "refused" in res.error and "--allow-mass-delete" in res.error
    assert stored_ids(rt) == before
    with rt.db.session() as s:
        assert s.scalar(select(IndexedDocument).where(IndexedDocument.connector == "rb").limit(1))
        last = s.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
        assert last.status == "failed" and "refused" in last.error

    [forced] = rt.indexer.sync(allow_mass_delete=True)
    assert forced.ok and forced.deleted == 15
    assert stored_ids(rt) == expected_ids(rt, "rb")


def test_source_that_goes_empty_is_refused_even_when_small(runtime_factory, tmp_path):
    src = tmp_path / "small"
    src.mkdir()
    for i in range(3):
        (src / f"d{i}.md").write_text(f"# Doc {i}\n\nSome text about service {i}.\n")
    rt = runtime_factory(make_config(tmp_path, [fs("small", src)]))
    rt.indexer.sync()
    for f in src.iterdir():
        f.unlink()
    [res] = rt.indexer.sync()
    assert not res.ok and "0 documents" in res.error
    assert len(stored_ids(rt)) == 3
    # Deleting 2 of 3 is an ordinary edit below the guard's minimum size.
    (src / "d0.md").write_text("# Doc 0\n\nSome text about service 0.\n")
    [res] = rt.indexer.sync()
    assert res.ok and res.deleted == 2


def test_failing_connector_does_not_stop_others(runtime_factory, tmp_path, source):
    bad = {"name": "broken", "type": "git", "url": str(tmp_path / "no-such-repo"), "schedule": "1h"}
    rt = runtime_factory(make_config(tmp_path, [bad, fs("rb", source)]))
    broken, ok = rt.indexer.sync()
    assert not broken.ok and "no-such-repo" in broken.error
    assert ok.ok and ok.added == 20
    with rt.db.session() as s:
        runs = {r.connector: r for r in s.scalars(select(SyncRun))}
    assert runs["broken"].status == "failed" and runs["broken"].finished_at is not None
    assert runs["rb"].status == "ok" and runs["rb"].added == 20


def test_unreadable_files_are_reported_and_keep_their_old_version(
    runtime_factory, tmp_path, source
):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    rt.indexer.sync()
    victim = sorted(source.rglob("*.md"))[3]
    rel = victim.relative_to(source).as_posix()
    old = rt.indexer.store.collection.get(where={"doc_id": rel})["ids"]
    victim.write_bytes(b"\xff\xfe\x00binary\x00garbage")
    (source / "latin1.md").write_bytes("# Caf\xe9\n".encode("latin-1"))
    [res] = rt.indexer.sync(full=True)
    assert res.ok and res.failed == 2
    assert any(rel in p and "binary" in p for p in res.problems)
    assert any("latin1.md" in p and "UTF-8" in p for p in res.problems)
    assert rt.indexer.store.collection.get(where={"doc_id": rel})["ids"] == old


def test_model_change_means_a_clean_reindex(runtime_factory, tmp_path, source, embedder):
    cfg = make_config(tmp_path, [fs("rb", source)])
    rt = runtime_factory(cfg)
    rt.indexer.sync()
    rt.close()

    # A reader never mixes vectors: it refuses an index built by another model.
    with pytest.raises(StoreError, match="built with embedding model"):
        VectorStore(cfg.storage.chroma_path, "another-model", create=False)

    rt2 = runtime_factory(cfg)
    rt2.__dict__["embedder"] = CountingEmbedder(embedder, name="another-model")
    assert rt2.indexer.store.recreated
    assert rt2.indexer.store.count() == 0
    [res] = rt2.indexer.sync()
    assert res.added == 20 and rt2.embedder.texts > 0
    meta = rt2.indexer.store.collection.metadata
    assert meta["embedding_model"] == "another-model"


def test_upserts_are_batched_to_the_store_limit(runtime_factory, tmp_path, source, monkeypatch):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    from chromadb.api.models.Collection import Collection

    store = rt.indexer.store
    calls: list[int] = []
    real_upsert = Collection.upsert
    monkeypatch.setattr(type(store), "max_batch", property(lambda self: 7))

    def spy(self, **kw):
        calls.append(len(kw["ids"]))
        return real_upsert(self, **kw)

    monkeypatch.setattr(Collection, "upsert", spy)
    [res] = rt.indexer.sync()
    assert res.ok and max(calls) <= 7 and sum(calls) == res.chunks


def test_one_writer_per_data_dir(tmp_path):
    first = WriterLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(IndexLockedError, match="another kbot process"):
            # flock locks belong to the open file description, so a second open conflicts
            # even inside one process, just as a second process would.
            WriterLock(tmp_path).acquire()
    finally:
        first.release()
    again = WriterLock(tmp_path)
    again.acquire()
    again.release()


def test_query_vectors_match_stored_chunks(runtime_factory, tmp_path, source, embedder):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    rt.indexer.sync()
    got = rt.indexer.store.collection.get(limit=1, include=["documents", "metadatas", "embeddings"])
    stored = np.asarray(got["embeddings"][0])
    assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-3
    hits = rt.indexer.store.query(stored, 1)
    assert hits[0].chunk.id == got["ids"][0] and hits[0].score > 0.99


def test_new_chunk_settings_rechunk_unchanged_sources(runtime_factory, tmp_path, source):
    rt = runtime_factory(make_config(tmp_path, [fs("rb", source)]))
    rt.indexer.sync()
    before = stored_ids(rt)
    rt.close()
    rt2 = runtime_factory(make_config(tmp_path, [fs("rb", source)], indexer={"chunk_size": 400}))
    [res] = rt2.indexer.sync()
    assert res.ok and res.updated == 20 and res.unchanged == 0
    after = stored_ids(rt2)
    assert after == expected_ids(rt2, "rb") and len(after) > len(before)
    [again] = rt2.indexer.sync()
    assert again.unchanged == 20


# -- new ids: read by id when the connector can, else everything --------------------------------

LONG_AGO = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Source:
    """An in-memory source: documents, the ids that cannot be read, and the calls it got."""

    docs: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # id -> (text, mtime)
    broken: set[str] = field(default_factory=set)
    calls: list[tuple[str, ...]] = field(default_factory=list)


SOURCES: dict[str, Source] = {}


class MemoryConfig(ConnectorConfig):
    type: Literal["memory", "memory-by-id"]


class MemoryConnector:
    """A connector without ``load``: like filesystem and git."""

    type_name: ClassVar[str] = "memory"

    def __init__(self, config: MemoryConfig, workdir: Path | None = None):
        self.config = config
        self.source = SOURCES[config.name]
        self.problems: list[DocumentError] = []

    def list_ids(self) -> set[str]:
        self.source.calls.append(("list_ids",))
        return set(self.source.docs)

    def load_all(self) -> Iterator[Document]:
        self.source.calls.append(("load_all",))
        self.problems = []
        yield from self._read(sorted(self.source.docs))

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.source.calls.append(("changed_since",))
        self.problems = []
        yield from self._read(sorted(i for i, (_, t) in self.source.docs.items() if t >= since))

    def _read(self, ids: list[str]) -> Iterator[Document]:
        for i in ids:
            if i in self.source.broken:
                self.problems.append(DocumentError(i, "unreadable"))
                continue
            text, mtime = self.source.docs[i]
            yield Document(self.config.name, i, f"Doc {i}", f"mem://{i}", text, mtime)


class LoadingMemoryConnector(MemoryConnector):
    """The same source, readable by id."""

    type_name: ClassVar[str] = "memory-by-id"

    def load(self, ids: set[str]) -> Iterator[Document]:
        self.source.calls.append(("load", *sorted(ids)))
        self.problems = []
        yield from self._read(sorted(i for i in ids if i in self.source.docs))


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Source:
    monkeypatch.setitem(REGISTRY, "memory", (MemoryConfig, MemoryConnector))
    monkeypatch.setitem(REGISTRY, "memory-by-id", (MemoryConfig, LoadingMemoryConnector))
    source = Source({k: (f"# Doc {k}\n\nService {k} runbook text.", LONG_AGO) for k in "abc"})
    monkeypatch.setitem(SOURCES, "mem", source)
    return source


class RecordingProgress:
    def __init__(self, total: int | None):
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def mem(kind: str) -> dict:
    return {"name": "mem", "type": kind, "schedule": "1h"}


def read_calls(source: Source) -> list[tuple[str, ...]]:
    return [c for c in source.calls if c[0] != "list_ids"]


def test_new_and_failing_ids_are_read_by_id_without_a_full_reread(
    runtime_factory, tmp_path, memory
):
    memory.broken = {"b"}
    rt = runtime_factory(make_config(tmp_path, [mem("memory-by-id")]))
    bars: list[RecordingProgress] = []

    def progress(_name: str, total: int | None) -> RecordingProgress:
        bars.append(RecordingProgress(total))
        return bars[-1]

    rt.indexer.progress = progress
    [first] = rt.indexer.sync()
    assert first.ok and (first.added, first.failed) == (2, 1)
    assert read_calls(memory) == [("load_all",)]  # a first sync reads everything
    assert (bars[-1].total, bars[-1].n) == (3, 2)

    now = datetime.now(UTC)
    memory.calls.clear()
    memory.docs["a"] = ("# Doc a\n\nEdited: service a moved to zz-cluster.", now)
    memory.docs["d"] = ("# Doc d\n\nCopied in with its old date.", LONG_AGO)
    memory.docs["e"] = ("# Doc e\n\nWritten just now.", now)
    memory.docs["f"] = ("# Doc f\n\nWritten just now, unreadable.", now)
    memory.broken.add("f")
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    # What changed, then only the unindexed ids it did not bring: the new "d" and the still
    # failing "b"; not "f", which changed_since just failed on, and no load_all.
    assert read_calls(memory) == [("changed_since",), ("load", "b", "d")]
    assert (second.added, second.updated, second.unchanged, second.failed) == (2, 1, 1, 2)
    assert sorted(second.problems) == ["b: unreadable", "f: unreadable"]
    assert (bars[-1].total, bars[-1].n) == (None, 3)  # a and e, then d

    memory.calls.clear()
    memory.broken.clear()  # both readable now, without a new modification time for "b"
    memory.docs["f"] = (memory.docs["f"][0], LONG_AGO)
    [third] = rt.indexer.sync()
    assert read_calls(memory) == [("changed_since",), ("load", "b", "f")]
    assert (third.added, third.updated, third.unchanged, third.failed) == (2, 0, 4, 0)
    with rt.db.session() as s:
        rows = s.scalars(select(IndexedDocument.doc_id).where(IndexedDocument.connector == "mem"))
        assert set(rows) == set("abcdef")
    assert {m["doc_id"] for m in rt.indexer.store.collection.get()["metadatas"]} == set("abcdef")

    memory.calls.clear()
    [fourth] = rt.indexer.sync()
    assert read_calls(memory) == [("changed_since",)]  # nothing new: no load at all
    assert (fourth.added, fourth.unchanged) == (0, 6)


def test_connectors_without_load_reread_everything_on_new_ids(runtime_factory, tmp_path, memory):
    rt = runtime_factory(make_config(tmp_path, [mem("memory")]))
    rt.indexer.sync()
    memory.calls.clear()
    memory.docs["d"] = ("# Doc d\n\nCopied in with its old date.", LONG_AGO)
    [res] = rt.indexer.sync()
    assert read_calls(memory) == [("load_all",)]
    assert (res.added, res.unchanged) == (1, 3)

    memory.calls.clear()
    [res] = rt.indexer.sync()
    assert read_calls(memory) == [("changed_since",)]


def test_a_file_copied_in_with_an_old_mtime_is_indexed(runtime_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"d{i}.md").write_text(f"# Doc {i}\n\nSome text about service {i}.\n")
    rt = runtime_factory(make_config(tmp_path, [fs("docs", src)]))
    rt.indexer.sync()
    copied = src / "copied.md"
    copied.write_text("# Copied\n\nKept its zz-old modification time.\n")
    old = LONG_AGO.timestamp()
    os.utime(copied, (old, old))  # as cp -p, rsync -t or an unpacked archive leave it
    [res] = rt.indexer.sync()
    assert res.ok and (res.added, res.unchanged) == (1, 3)
    got = rt.indexer.store.collection.get(where={"doc_id": "copied.md"})
    assert any("zz-old" in d for d in got["documents"])
