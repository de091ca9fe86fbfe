"""A BM25 index over the same chunks as the vector store, rebuilt by the indexer after
every sync that changed something, and reloaded by readers when it changes on disk.

bm25s builds an index in one pass (no incremental updates); over the ~8k chunks of a
typical wiki that takes about a second, far less than embedding a single changed page.

With a Chroma server (``storage.chroma_url``) web processes keep nothing on disk:
``SharedLexicalIndex`` holds the index in memory and rebuilds it from the server's chunks
when the index version in the database changes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from indexer.text import search_terms

log = logging.getLogger(__name__)


class LexicalIndex:
    """Keyword search over chunk texts. ``search`` returns [] until an index exists."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._loaded_version: str | None = None
        self._bm25 = None
        self._ids: list[str] = []
        self._vocabulary = _VocabularyOf()

    @property
    def _current(self) -> Path:
        return self.folder / "CURRENT"

    def exists(self) -> bool:
        return self._read_current() is not None

    def build(self, ids: list[str], texts: list[str]) -> None:
        """Replace the index with one over ``texts``; readers switch atomically."""
        version = uuid.uuid4().hex
        target = self.folder / version
        target.mkdir(parents=True, exist_ok=True)
        if ids:
            _index(texts).save(str(target), show_progress=False)
        (target / "ids.json").write_text(json.dumps(ids))
        old = self._read_current()
        tmp = self.folder / f".CURRENT.{version}"
        tmp.write_text(version)
        os.replace(tmp, self._current)
        if old and old != version:
            shutil.rmtree(self.folder / old, ignore_errors=True)

    def _read_current(self) -> str | None:
        try:
            return self._current.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _ensure_loaded(self) -> None:
        version = self._read_current()
        if version == self._loaded_version:
            return
        bm25s = _bm25s()

        with self._lock:
            if version == self._loaded_version:
                return
            if version is None:
                self._bm25, self._ids = None, []
            else:
                folder = self.folder / version
                ids = json.loads((folder / "ids.json").read_text())
                self._bm25 = bm25s.BM25.load(str(folder)) if ids else None
                self._ids = ids
            self._loaded_version = version

    def _loaded(self) -> bool:
        """Whether the current index is loaded; a half-written or damaged one is not (then
        search is dense only, and no word counts as unknown)."""
        try:
            self._ensure_loaded()
        except (OSError, ValueError) as e:
            log.warning("lexical index unavailable: %s", e)
            return False
        return True

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunk ids for ``query`` with their BM25 scores, best first."""
        if not self._loaded():
            return []
        return _search(self._bm25, self._ids, query, k)

    def vocabulary(self) -> Vocabulary | None:
        """The index's words (None before the first build, or when it cannot be read)."""
        return self._vocabulary(self._bm25) if self._loaded() else None

    def version(self) -> str:
        """Changes with every rebuild ("" before the first)."""
        return self._read_current() or ""


class SharedLexicalIndex:
    """The same keyword search, held in memory and rebuilt from ``chunks()`` (the Chroma
    server's chunks, as ``(id, search text)``) whenever ``version()`` (the index version
    in the shared database) changes; that is checked at most every ``check_s`` seconds, so
    a web process follows a sync within seconds and a question costs no extra query."""

    def __init__(
        self,
        chunks: Callable[[], Iterable[tuple[str, str]]],
        version: Callable[[], str],
        check_s: float = 2.0,
    ):
        self._chunks = chunks
        self._version = version
        self.check_s = check_s
        self._refreshing = threading.Lock()
        self._loaded_version: str | None = None
        self._checked_at = float("-inf")
        self._index: tuple[object | None, list[str]] = (None, [])  # swapped as one
        self._vocabulary = _VocabularyOf()

    def exists(self) -> bool:
        """Rebuilt by every writer after a changing sync: there is no file to be missing."""
        return True

    def build(self, ids: list[str], texts: list[str]) -> None:
        """The writer's own copy, current as soon as its sync is done; other processes
        rebuild theirs when they see the new version."""
        with self._refreshing:
            self._index = (_index(texts) if ids else None, list(ids))
            self._loaded_version = self._version()
            self._checked_at = time.monotonic()

    def _ensure_loaded(self) -> None:
        if time.monotonic() - self._checked_at < self.check_s:
            return
        # One thread rebuilds; the others answer from the index they have meanwhile (or,
        # before the first build, wait for it).
        if not self._refreshing.acquire(blocking=self._loaded_version is None):
            return
        try:
            if time.monotonic() - self._checked_at < self.check_s:
                return
            version = self._version()
            if version != self._loaded_version:
                started = time.monotonic()
                pairs = list(self._chunks())
                ids = [i for i, _ in pairs]
                self._index = (_index([t for _, t in pairs]) if ids else None, ids)
                self._loaded_version = version
                log.info(
                    "keyword index rebuilt from the Chroma server: %d chunks in %.1f s "
                    "(index version %s)",
                    len(ids),
                    time.monotonic() - started,
                    version,
                )
            self._checked_at = time.monotonic()
        finally:
            self._refreshing.release()

    def _loaded(self) -> bool:
        """Whether an index is loaded and current; not while the server or the database is
        down (then search is dense only, and no word counts as unknown)."""
        try:
            self._ensure_loaded()
        except Exception as e:
            log.warning("lexical index unavailable: %s", e)
            self._checked_at = time.monotonic()  # not retried on every question
            return False
        return True

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunk ids for ``query`` with their BM25 scores, best first."""
        if not self._loaded():
            return []
        bm25, ids = self._index
        return _search(bm25, ids, query, k)

    def vocabulary(self) -> Vocabulary | None:
        """The index's words (None before the first build, or when it cannot be rebuilt)."""
        return self._vocabulary(self._index[0]) if self._loaded() else None

    def version(self) -> str:
        return self._loaded_version or ""


class Vocabulary:
    """The words of an index (as ``search_terms`` writes them), to tell a word that no
    document uses ("sonarqube") from a misspelling of one that some document does
    ("alertmanger"). Only words of letters count: a number or a path is not misspelt."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(w for w in words if w.isalpha() and len(w) >= MIN_WORD)
        # Each word without one of its letters, and how many words give it: two words are
        # one edit apart (a letter added, dropped or changed, or two swapped) when one is
        # the other without a letter, or both give the same shorter form.
        self._deletions: dict[str, int] = {}
        for w in self.words:
            for d in _deletions(w):
                self._deletions[d] = self._deletions.get(d, 0) + 1

    def __contains__(self, word: object) -> bool:
        return word in self.words

    def __len__(self) -> int:
        return len(self.words)

    def near(self, word: str) -> bool:
        """Whether a word of the vocabulary other than ``word`` is one edit from it."""
        if word in self._deletions:
            return True  # a longer word without one of its letters
        own = word in self.words  # its own forms without a letter do not count
        return any(d in self.words or self._deletions.get(d, 0) > own for d in _deletions(word))


# Shorter words are not looked up: most are one edit from another ("till", "fill").
MIN_WORD = 4


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class _VocabularyOf:
    """An index's vocabulary, worked out once per index (0.1 s for the 7,393 chunks of the
    real corpus, whose 9,888 words of letters it keeps)."""

    def __init__(self) -> None:
        self._of: tuple[object, Vocabulary] | None = None

    def __call__(self, bm25) -> Vocabulary | None:
        if bm25 is None:
            return None
        got = self._of
        if got is None or got[0] is not bm25:
            got = self._of = (bm25, Vocabulary(bm25.vocab_dict))
        return got[1]


def _index(texts: Iterable[str]):  # -> bm25s.BM25
    model = _bm25s().BM25()
    model.index(corpus_terms(texts), show_progress=False)
    return model


def corpus_terms(texts: Iterable[str]) -> list[list[str]]:
    """``search_terms`` of each text ("\u2205" for one without any), each distinct word
    worked out once: no term spans whitespace, so a text's terms are its words' terms in
    order, and a corpus repeats its words (half of a rebuild's tokenising time on the
    real corpus, 0.52 -> 0.30 s for 7,448 chunks, with the same terms)."""
    seen: dict[str, list[str]] = {}
    out = []
    for text in texts:
        terms: list[str] = []
        for word in text.split():
            got = seen.get(word)
            if got is None:
                got = seen[word] = search_terms(word)
            terms += got
        out.append(terms or ["\u2205"])
    return out


def _search(bm25, ids: list[str], query: str, k: int) -> list[tuple[str, float]]:
    tokens = search_terms(query)
    if bm25 is None or not tokens:
        return []
    k = min(k, len(ids))
    docs, scores = bm25.retrieve([tokens], k=k, show_progress=False, n_threads=1)
    return [
        (ids[int(i)], float(s))
        for i, s in zip(np.asarray(docs[0]), np.asarray(scores[0]), strict=True)
        if s > 0
    ]


def _bm25s():  # -> the bm25s module
    """bm25s, imported late (it is slow to import). Its import sets its logger to DEBUG,
    which would print "Building index from tokens" on every sync: it follows the root
    logger's level instead."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s
