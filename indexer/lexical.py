"""A BM25 index over the same chunks as the vector store, rebuilt by the indexer after
every sync that changed something, and reloaded by readers when it changes on disk.

bm25s builds an index in one pass (no incremental updates); over the ~8k chunks of a
typical wiki that takes about a second, far less than embedding a single changed page.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
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

    @property
    def _current(self) -> Path:
        return self.folder / "CURRENT"

    def exists(self) -> bool:
        return self._read_current() is not None

    def build(self, ids: list[str], texts: list[str]) -> None:
        """Replace the index with one over ``texts``; readers switch atomically."""
        bm25s = _bm25s()

        version = uuid.uuid4().hex
        target = self.folder / version
        target.mkdir(parents=True, exist_ok=True)
        if ids:
            model = bm25s.BM25()
            model.index([search_terms(t) or ["\u2205"] for t in texts], show_progress=False)
            model.save(str(target), show_progress=False)
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

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best chunk ids for ``query`` with their BM25 scores, best first."""
        try:
            self._ensure_loaded()
        except (OSError, ValueError) as e:  # a half-written or damaged index: dense only
            log.warning("lexical index unavailable: %s", e)
            return []
        tokens = search_terms(query)
        if self._bm25 is None or not tokens:
            return []
        k = min(k, len(self._ids))
        docs, scores = self._bm25.retrieve([tokens], k=k, show_progress=False, n_threads=1)
        return [
            (self._ids[int(i)], float(s))
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
