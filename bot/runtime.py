"""Wires a config into the running parts: database, embedder, store, indexer, services.

Everything is built lazily, so `kbot feedback add` never loads the embedding model.
"""

from __future__ import annotations

import threading
from functools import cached_property

from bot.answer.feedback import FeedbackService
from bot.answer.retrieval import Retriever
from bot.answer.service import AnsweringService
from config.models import KbotConfig
from db import Database
from indexer.embeddings import Embedder, get_embedder
from indexer.lexical import LexicalIndex
from indexer.lock import WriterLock
from indexer.store import VectorStore
from indexer.sync import Indexer, ProgressFactory


class Runtime:
    def __init__(self, config: KbotConfig, progress: ProgressFactory | None = None):
        self.config = config
        self.progress = progress
        self._lock = threading.Lock()
        self._writer_lock: WriterLock | None = None

    @cached_property
    def db(self) -> Database:
        db = Database(self.config.storage.sqlalchemy_url)
        db.migrate()
        return db

    @cached_property
    def embedder(self) -> Embedder:
        return get_embedder(self.config.embedding.model)

    @cached_property
    def indexer(self) -> Indexer:
        """The index writer. Takes the single-writer lock for the life of the process."""
        with self._lock:
            lock = WriterLock(self.config.storage.data_dir)
            lock.acquire()
            self._writer_lock = lock
            store = VectorStore(self.config.storage.chroma_path, self.embedder.name, create=True)
            # Readers in this process share the writer's store.
            self.__dict__["store"] = store
            return Indexer(
                self.config, self.db, store, self.embedder, self.progress, lexical=self.lexical
            )

    @cached_property
    def store(self) -> VectorStore:
        return VectorStore(self.config.storage.chroma_path, self.embedder.name, create=False)

    @cached_property
    def answering(self) -> AnsweringService:
        retriever = Retriever(
            self.config.retrieval,
            lambda: self.store,
            self.lexical,
            self.embedder,
            {c.name: c.audiences() for c in self.config.connectors},
        )
        generator = None
        if self.config.llm is not None:
            from bot.answer.generation import Generator, index_version

            generator = Generator(self.config.llm, lambda: index_version(self.db, self.lexical))
        return AnsweringService(self.config.answering, retriever, self.db, generator)

    @property
    def all_audiences(self) -> frozenset[str]:
        """Every configured audience: for admin tools (eval, the CLI) that see everything."""
        # audiences(), not audience: a Confluence connector gives spaces audiences of their own.
        return frozenset().union(*(c.audiences() for c in self.config.connectors)) | {"public"}

    @cached_property
    def lexical(self) -> LexicalIndex:
        return LexicalIndex(self.config.storage.data_dir / "bm25")

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.db)

    def close(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
        if "db" in self.__dict__:
            self.db.dispose()
