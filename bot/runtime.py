"""Wires a config into the running parts: database, embedder, store, indexer, services.

Everything is built lazily, so `kbot feedback add` never loads the embedding model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from bot.answer.curation import Curations
from bot.answer.feedback import FeedbackService
from bot.answer.generation import AnswerCache, CircuitBreaker
from bot.answer.limits import MemoryCounter, RateLimiter, RedisCounter
from bot.answer.retrieval import Retriever
from bot.answer.service import AnsweringService
from bot.answer.votes import VoteRanking
from config.models import KbotConfig, StorageConfig
from db import Database, Pool
from indexer.embeddings import Embedder, get_embedder
from indexer.lexical import LexicalIndex, SharedLexicalIndex
from indexer.lock import WriterLock
from indexer.store import VectorStore
from indexer.sync import Indexer, ProgressFactory, last_change


def open_database(storage: StorageConfig) -> Database:
    """The configured database with its pool settings, neither migrated nor checked."""
    return Database(storage.sqlalchemy_url, Pool(**storage.pool.model_dump()))


class Runtime:
    def __init__(
        self, config: KbotConfig, progress: ProgressFactory | None = None, reindex: bool = False
    ):
        self.config = config
        # Let the writer replace a Chroma server's collection built with another model.
        self.reindex = reindex
        self.progress = progress
        self._lock = threading.Lock()
        self._writer_lock: WriterLock | None = None

    @cached_property
    def db(self) -> Database:
        storage = self.config.storage
        db = open_database(storage)
        if storage.migrates:
            db.migrate()
        else:
            db.check_schema()
        return db

    @cached_property
    def embedder(self) -> Embedder:
        embedding = self.config.embedding
        return get_embedder(
            embedding.model,
            embedding.backend,
            # The ONNX exports live beside the index, also when Chroma is a server.
            cache_dir=self.config.storage.data_dir / "models",
            threads=embedding.threads,
        )

    @cached_property
    def indexer(self) -> Indexer:
        """The index writer. Takes the single-writer lock for the life of the process."""
        with self._lock:
            lock = WriterLock(self.config.storage.data_dir)
            lock.acquire()
            self._writer_lock = lock
            store = self._store(create=True)
            # Readers in this process share the writer's store.
            self.__dict__["store"] = store
            return Indexer(
                self.config, self.db, store, self.embedder, self.progress, lexical=self.lexical
            )

    @cached_property
    def store(self) -> VectorStore:
        return self._store(create=False)

    def _store(self, *, create: bool) -> VectorStore:
        """The embedded Chroma in data_dir, or the `chroma run` server of storage.chroma_url."""
        storage = self.config.storage
        token = storage.chroma_token.get_secret_value() if storage.chroma_token else None
        return VectorStore(
            storage.chroma_path,
            self.embedder.name,
            create=create,
            url=storage.chroma_url,
            token=token,
            reindex=create and self.reindex,
        )

    @cached_property
    def answering(self) -> AnsweringService:
        retriever = Retriever(
            self.config.retrieval,
            lambda: self.store,
            self.lexical,
            self.embedder,
            {c.name: c.audiences() for c in self.config.connectors},
            votes=self.votes,
            curations=self.curations,
        )
        generator = None
        if self.config.llm is not None:
            from bot.answer.generation import Generator, index_version

            generator = Generator(
                self.config.llm,
                lambda: index_version(self.db, self.lexical),
                cache=self.answer_cache,
                breaker=self.llm_breaker,
            )
        return AnsweringService(
            self.config.answering, retriever, self.db, generator, limiter=self.limiter
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        """Questions per user and channel, counted in Redis when configured."""
        counter = MemoryCounter() if self.redis is None else RedisCounter(self.redis)
        return RateLimiter(self.config.rate_limits, counter)

    @cached_property
    def redis(self) -> Any:  # -> redis.Redis | None
        """The client of storage.redis_url, checked with a PING; None without one."""
        if self.config.storage.redis_url is None:
            return None
        from bot.ops.shared import connect

        return connect(self.config.storage.redis_url)

    @property
    def answer_cache(self) -> AnswerCache:
        """Generated answers: in Redis when configured, shared by every web process."""
        if self.redis is None:
            return AnswerCache()
        from bot.ops.shared import RedisAnswerCache

        return RedisAnswerCache(self.redis)

    @property
    def llm_breaker(self) -> CircuitBreaker | None:
        """The model's circuit breaker in Redis when configured, shared by every web
        process; None for the Generator's own."""
        if self.redis is None or self.config.llm is None:
            return None
        from bot.ops.shared import RedisCircuitBreaker

        return RedisCircuitBreaker.for_llm(self.redis, self.config.llm)

    @property
    def all_audiences(self) -> frozenset[str]:
        """Every configured audience: for admin tools (eval, the CLI) that see everything."""
        # audiences(), not audience: a Confluence connector gives spaces audiences of their own.
        return frozenset().union(*(c.audiences() for c in self.config.connectors)) | {"public"}

    @cached_property
    def lexical(self) -> LexicalIndex | SharedLexicalIndex:
        """Beside the embedded store, a file the indexer writes; with a Chroma server, an
        in-memory index each process rebuilds from the server when the index version in
        the database changes (docs/ARCHITECTURE.md, "More than one machine")."""
        if self.config.storage.chroma_url is None:
            return LexicalIndex(self.config.storage.data_dir / "bm25")
        return SharedLexicalIndex(self._search_texts, lambda: str(last_change(self.db)))

    def _search_texts(self) -> Iterator[tuple[str, str]]:
        for c in self.store.all_chunks():
            yield c.id, c.search_text()

    @cached_property
    def feedback(self) -> FeedbackService:
        votes = self.votes
        return FeedbackService(self.db, on_vote=votes.changed if votes else None)

    @cached_property
    def votes(self) -> VoteRanking | None:
        """Askers' votes in ranking (feedback.ranking); None when it is off."""
        if not self.config.feedback.ranking:
            return None
        return VoteRanking(self.config.feedback, self.db)

    @cached_property
    def curations(self) -> Curations:
        """Leads' pins and suppressions."""
        return Curations(
            self.db, lambda text: self.embedder.embed([text])[0], self.config.feedback.close
        )

    def close(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
        if "db" in self.__dict__:
            self.db.dispose()
