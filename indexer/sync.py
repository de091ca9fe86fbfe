"""Sync connectors into the index: incremental by content hash, guarded against mass deletion.

Per connector:
1. list the ids that exist now (the pruning capability);
2. refuse the run if that would delete too much (a source that is down looks empty);
3. read what changed (everything on a first or full sync), re-chunk and re-embed only
   documents whose content hash changed, in batches. Ids listed but not indexed yet (new, or
   failing so far) are read by id when the connector can (``load``); otherwise they make
   the run read everything, since ``changed_since`` can miss them (a file copied in with
   an old modification time);
4. delete the chunks of documents that are gone;
5. record the run in SQL.

Each batch writes Chroma first, then the document rows. A crash in between only means the
next sync re-embeds those documents; the index and the rows never disagree for long.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from config.models import KbotConfig
from connectors import (
    Connector,
    ConnectorConfig,
    ConnectorError,
    Document,
    DocumentError,
    build_connector,
)
from connectors.parsing import readable_types
from db import Database
from db.models import IndexedDocument, SyncRun, utcnow
from indexer.chunking import Chunk, Chunker, chunk_id
from indexer.embeddings import Embedder
from indexer.lexical import LexicalIndex, SharedLexicalIndex
from indexer.store import VectorStore
from indexer.sync_lock import HELD, SyncLock

log = logging.getLogger(__name__)

# Chunks embedded per batch: large enough for the encoder to sort by length, small enough
# that progress is saved often.
EMBED_BATCH_CHUNKS = 512
# Below this many documents the deletion guard does not apply: deleting 3 of 4 is normal.
GUARD_MIN_DOCS = 10


@dataclass
class SyncResult:
    """What one connector's sync did (the shape of ``kbot sync --json``)."""

    name: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    error: str | None = None
    # Set when the sync did not run because another process was syncing this connector.
    skipped: str | None = None
    problems: list[str] = field(default_factory=list)
    # Files the connector's ``include`` matched that kbot does not read, by type.
    skipped_types: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def skipped_note(self) -> str | None:
        """What ``skipped_types`` means for an admin, or None when nothing was skipped."""
        if not self.skipped_types:
            return None
        n = sum(self.skipped_types.values())
        kinds = ", ".join(f"{t} {c}" for t, c in self.skipped_types.items())
        return (
            f"{n} {'file' if n == 1 else 'files'} matched `include` but kbot does not read "
            f"{'its' if n == 1 else 'their'} type, skipped ({kinds}); kbot reads "
            f"{readable_types()}"
        )

    def as_json(self) -> dict:
        d = asdict(self)
        d.pop("problems")
        return d


def last_change(db: Database) -> int:
    """The id of the last sync run that changed documents (0 before any): the index
    version that processes sharing one database and one Chroma server agree on."""
    with db.session() as s:
        run = s.scalar(
            select(func.max(SyncRun.id)).where(
                SyncRun.added + SyncRun.updated + SyncRun.deleted > 0
            )
        )
    return run or 0


def last_successful_run(s: Session, connector: str) -> SyncRun | None:
    return s.scalars(
        select(SyncRun)
        .where(SyncRun.connector == connector, SyncRun.status == "ok")
        .order_by(SyncRun.id.desc())
        .limit(1)
    ).first()


class SyncRefused(Exception):
    """The sync would do harm (mass deletion); nothing was changed."""


ProgressFactory = Callable[[str, int | None], "Progress"]


class Progress:
    """Progress reporting hook; the CLI plugs in a progress bar."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Indexer:
    """The only writer of the index."""

    def __init__(
        self,
        config: KbotConfig,
        db: Database,
        store: VectorStore,
        embedder: Embedder,
        progress: ProgressFactory | None = None,
        lexical: LexicalIndex | SharedLexicalIndex | None = None,
    ):
        self.config = config
        self.db = db
        self.store = store
        self.lexical = lexical
        self.embedder = embedder
        self.chunker = Chunker(config.indexer.chunk_size, config.indexer.chunk_overlap)
        self.progress = progress or (lambda _name, _total: Progress())
        self.locks = SyncLock(db, config.storage.data_dir)
        if store.recreated:
            # A new collection (first run, lost data dir, or another embedding model):
            # every document must be embedded again.
            with db.session() as s:
                s.execute(delete(IndexedDocument))

    def sync(
        self,
        names: Iterable[str] | None = None,
        *,
        full: bool = False,
        allow_mass_delete: bool = False,
    ) -> list[SyncResult]:
        """Sync the named connectors (all by default). One failure does not stop the others."""
        configs = (
            [self.config.connector(n) for n in names] if names else list(self.config.connectors)
        )
        results = [
            self._sync_run(c, full=full, allow_mass_delete=allow_mass_delete) for c in configs
        ]
        # One keyword-index rebuild covers every connector synced here.
        self._refresh_lexical(results)
        return results

    def sync_one(
        self, cfg: ConnectorConfig, *, full: bool = False, allow_mass_delete: bool = False
    ) -> SyncResult:
        """Sync one connector (what a scheduled job runs)."""
        result = self._sync_run(cfg, full=full, allow_mass_delete=allow_mass_delete)
        self._refresh_lexical([result])
        return result

    def _refresh_lexical(self, results: list[SyncResult]) -> None:
        changed = any(r.added or r.updated or r.deleted for r in results)
        if self.lexical is None or not (changed or not self.lexical.exists()):
            return
        try:
            self.rebuild_lexical()
        except Exception as e:  # search falls back to vectors only; the syncs stand
            log.exception("rebuilding the keyword index failed")
            for r in results:
                r.problems.append(f"keyword index not rebuilt ({type(e).__name__}: {e})")

    def _sync_run(
        self, cfg: ConnectorConfig, *, full: bool = False, allow_mass_delete: bool = False
    ) -> SyncResult:
        with self.locks.hold(cfg.name) as held:
            if not held:
                log.warning("sync of %s skipped: %s", cfg.name, HELD)
                return SyncResult(cfg.name, skipped=HELD)
            return self._locked_run(cfg, full=full, allow_mass_delete=allow_mass_delete)

    def _locked_run(
        self, cfg: ConnectorConfig, *, full: bool = False, allow_mass_delete: bool = False
    ) -> SyncResult:
        result = SyncResult(cfg.name)
        with self.db.session() as s:
            run = SyncRun(
                connector=cfg.name, started_at=utcnow(), full=full, signature=self.signature
            )
            s.add(run)
        try:
            self._sync(cfg, result, full=full, allow_mass_delete=allow_mass_delete)
        except (ConnectorError, SyncRefused) as e:
            result.error = str(e)
        except Exception as e:  # a bug or a broken store must not stop the other connectors
            log.exception("sync of connector %s failed", cfg.name)
            result.error = f"internal error: {type(e).__name__}: {e}"
        if result.error:
            log.warning("sync of %s failed: %s", cfg.name, result.error)
        with self.db.session() as s:
            run = s.get(SyncRun, run.id)
            assert run is not None
            run.finished_at = utcnow()
            run.status = "failed" if result.error else "ok"
            for k in ("added", "updated", "deleted", "unchanged", "failed", "chunks"):
                setattr(run, k, getattr(result, k))
            run.error = result.error
        return result

    def _sync(
        self, cfg: ConnectorConfig, result: SyncResult, *, full: bool, allow_mass_delete: bool
    ) -> None:
        connector = build_connector(cfg, self.config.storage.data_dir)
        with self.db.session() as s:
            known = {
                d.doc_id: d
                for d in s.scalars(
                    select(IndexedDocument).where(IndexedDocument.connector == cfg.name)
                )
            }
            last_ok = last_successful_run(s, cfg.name)

        ids = connector.list_ids()
        gone = sorted(set(known) - ids)
        if not allow_mass_delete:
            self._guard(cfg.name, len(known), len(ids), len(gone))

        new_ids = ids - set(known)
        load: Callable[[set[str]], Iterator[Document]] | None = getattr(connector, "load", None)
        # Problems of the part of the run already read (``changed_since`` before ``load``).
        problems: list[DocumentError] = []
        if (
            not full
            and last_ok is not None
            and last_ok.signature == self.signature
            and (load is not None or not new_ids)
        ):
            # A small margin covers clock skew and files written while the last run listed.
            since = last_ok.started_at - timedelta(seconds=2)
            docs: Iterator[Document] = self._incremental(connector, since, new_ids, load, problems)
            total: int | None = None
        else:
            docs = connector.load_all()
            total = len(ids)
        bar = self.progress(cfg.name, total)
        pending: list[tuple[Document, str, list[Chunk]]] = []
        pending_chunks = 0
        try:
            for doc in docs:
                bar.update()
                prev = known.get(doc.id)
                digest = self._hash(doc)
                if prev is not None and prev.content_hash == digest:
                    if (prev.url, prev.audience, prev.title) != (doc.url, doc.audience, doc.title):
                        self._update_metadata(doc, prev.chunk_count)
                        result.updated += 1
                    continue
                chunks = self.chunker.split(doc)
                pending.append((doc, digest, chunks))
                pending_chunks += len(chunks)
                if pending_chunks >= EMBED_BATCH_CHUNKS:
                    self._write(pending, known, result)
                    pending, pending_chunks = [], 0
            if pending:
                self._write(pending, known, result)
        finally:
            bar.close()
        # ``load`` may start a new problems list or add to the old one: keep each once.
        listed = {id(p) for p in problems}
        problems += [p for p in connector.problems if id(p) not in listed]
        result.failed = len(problems)
        result.problems = [str(p) for p in problems]
        result.skipped_types = dict(getattr(connector, "skipped", None) or {})
        failed_ids = {p.doc_id for p in problems}

        if gone:
            self._delete(cfg.name, {g: known[g].chunk_count for g in gone})
            result.deleted = len(gone)
        # Every document indexed before this run that was not updated, deleted or unreadable.
        result.unchanged = len(set(known) - set(gone) - failed_ids) - result.updated
        with self.db.session() as s:
            result.chunks = sum(
                s.scalars(
                    select(IndexedDocument.chunk_count).where(IndexedDocument.connector == cfg.name)
                )
            )

    @staticmethod
    def _incremental(
        connector: Connector,
        since: datetime,
        new_ids: set[str],
        load: Callable[[set[str]], Iterator[Document]] | None,
        problems: list[DocumentError],
    ) -> Iterator[Document]:
        """What changed since ``since``, then the listed ids not indexed yet that it did not
        bring, read by id. Ids ``changed_since`` just failed on are not asked for again."""
        seen: set[str] = set()
        for doc in connector.changed_since(since):
            seen.add(doc.id)
            yield doc
        problems += connector.problems
        rest = new_ids - seen - {p.doc_id for p in problems}
        if rest and load is not None:
            yield from load(rest)

    def rebuild_lexical(self) -> None:
        """Rebuild the keyword index from what the vector store holds now."""
        assert self.lexical is not None
        chunks = list(self.store.all_chunks())
        self.lexical.build([c.id for c in chunks], [c.search_text() for c in chunks])

    @property
    def signature(self) -> str:
        """How documents are chunked and embedded now."""
        return f"{self.chunker.signature}|{self.embedder.name}"

    def _hash(self, doc: Document) -> str:
        """The document's content hash, salted with the signature, so a new chunk size,
        chunker version or model re-indexes it."""
        return hashlib.sha256(f"{doc.content_hash}|{self.signature}".encode()).hexdigest()

    def _guard(self, name: str, known: int, now: int, gone: int) -> None:
        if known == 0 or gone == 0:
            return
        limit = self.config.indexer.max_delete_fraction
        if now == 0 or (known >= GUARD_MIN_DOCS and gone > limit * known):
            raise SyncRefused(
                f"refused: connector {name!r} now lists {now} documents where the index has "
                f"{known}, "
                f"so {gone} would be deleted (over {limit:.0%}). The source may be down or "
                "misconfigured; the index was left as it was. If the deletion is intended, "
                "run `kbot sync --allow-mass-delete`."
            )

    def _write(
        self,
        batch: list[tuple[Document, str, list[Chunk]]],
        known: dict[str, IndexedDocument],
        result: SyncResult,
    ) -> None:
        chunks = [c for _, _, cs in batch for c in cs]
        if chunks:
            vectors = self.embedder.embed(
                [c.embedding_text() for c in chunks], batch_size=self.config.embedding.batch_size
            )
            self.store.upsert(chunks, vectors)
        stale: list[str] = []
        for doc, _, cs in batch:
            prev = known.get(doc.id)
            if prev is not None:
                stale += [
                    chunk_id(doc.connector, doc.id, i) for i in range(len(cs), prev.chunk_count)
                ]
        if stale:
            self.store.delete(stale)
        with self.db.session() as s:
            for doc, digest, cs in batch:
                row = IndexedDocument(
                    connector=doc.connector,
                    doc_id=doc.id,
                    content_hash=digest,
                    title=doc.title,
                    url=doc.url,
                    audience=doc.audience,
                    last_modified=doc.last_modified,
                    chunk_count=len(cs),
                    indexed_at=utcnow(),
                )
                s.merge(row)
                if doc.id in known:
                    result.updated += 1
                else:
                    result.added += 1

    def _update_metadata(self, doc: Document, chunk_count: int) -> None:
        ids = [chunk_id(doc.connector, doc.id, i) for i in range(chunk_count)]
        self.store.update_metadata(
            ids, {"url": doc.url, "audience": doc.audience, "title": doc.title}
        )
        with self.db.session() as s:
            row = s.get(IndexedDocument, (doc.connector, doc.id))
            if row is not None:
                row.url, row.audience, row.title = doc.url, doc.audience, doc.title

    def _delete(self, connector: str, gone: dict[str, int]) -> None:
        ids = [chunk_id(connector, d, i) for d, n in gone.items() for i in range(n)]
        self.store.delete(ids)
        with self.db.session() as s:
            for d in gone:
                s.execute(
                    delete(IndexedDocument).where(
                        IndexedDocument.connector == connector, IndexedDocument.doc_id == d
                    )
                )
