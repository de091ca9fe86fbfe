"""embedding.backend onnx and onnx-int8: the local export, its cache, its vectors, and an
index that never mixes them with torch's. The model is exported once per session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from config import ConfigError
from indexer import embeddings, onnx
from indexer.embeddings import EmbeddingError, get_embedder, model_folder
from indexer.store import StoreError, VectorStore
from tests.conftest import CORPUS, make_config, need

RUNBOOKS = CORPUS / "prometheus-operator-runbooks" / "content" / "runbooks"
SENTENCES = [
    "How do I roll back a bad deploy?",
    "The alert fires when a Prometheus target has been down for more than ten minutes.",
    "Restart the pod, then check that the liveness probe passes.",
    "Who owns the billing service?",
]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    """The session's ONNX exports (fp32 and int8), made once."""
    cache = tmp_path_factory.mktemp("onnx-models")
    get_embedder(backend="onnx-int8", cache_dir=cache)  # exports fp32, then quantises it
    return cache


@pytest.fixture
def source(tmp_path: Path) -> Path:
    need(RUNBOOKS.is_dir(), f"the shared corpus is missing at {CORPUS}")
    dest = tmp_path / "src"
    dest.mkdir()
    for f in sorted(RUNBOOKS.rglob("*.md"))[:5]:
        shutil.copy2(f, dest / f.name)
    return dest


def config(tmp_path: Path, source: Path, onnx_cache: Path | None = None, **embedding):
    """A config over ``source``; with ``onnx_cache`` its data dir reuses the session's
    exports instead of exporting again."""
    if onnx_cache is not None:
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / "models").symlink_to(onnx_cache, target_is_directory=True)
    fs = {"name": "rb", "type": "filesystem", "path": str(source), "schedule": "1h"}
    return make_config(tmp_path, [fs], embedding=embedding)


def test_the_export_is_cached_and_reused(onnx_cache, monkeypatch):
    [where] = onnx_cache.iterdir()
    assert {p.name for p in where.iterdir()} == {"model.onnx", "model-int8.onnx"}

    def no_export(*_args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx, "export_onnx", no_export)
    monkeypatch.setattr(onnx, "quantize_int8", no_export)
    folder = model_folder("all-MiniLM-L6-v2")
    for backend in ("onnx", "onnx-int8"):
        again = onnx.OnnxEmbedder("all-MiniLM-L6-v2", folder, backend, onnx_cache)
        assert again.name == f"all-MiniLM-L6-v2+{backend}"
        assert again.path.parent == where


def test_onnx_vectors_match_torch(onnx_cache, embedder):
    reference = embedder.embed(SENTENCES)
    for backend, floor in (("onnx", 0.999), ("onnx-int8", 0.96)):
        vectors = get_embedder(backend=backend, cache_dir=onnx_cache).embed(SENTENCES, 2)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        cosines = (vectors * reference).sum(axis=1)
        assert cosines.min() >= floor, (backend, cosines)
    assert get_embedder(backend="onnx", cache_dir=onnx_cache).embed([]).shape == (0, 384)


def test_switching_backend_reindexes_and_never_mixes(runtime_factory, tmp_path, source, onnx_cache):
    torch_rt = runtime_factory(config(tmp_path, source, onnx_cache, backend="torch"))
    [first] = torch_rt.indexer.sync()
    torch_rt.close()

    rt = runtime_factory(config(tmp_path, source, backend="onnx-int8"))
    assert rt.embedder.name == "all-MiniLM-L6-v2+onnx-int8"
    assert rt.indexer.store.recreated  # the torch vectors are gone before any is added
    [res] = rt.indexer.sync()
    assert res.ok and res.added == first.added == 5 and res.chunks == first.chunks
    assert rt.indexer.store.collection.metadata["embedding_model"] == rt.embedder.name
    got = rt.indexer.store.collection.get(limit=1, include=["documents"])
    # Questions are embedded by the same backend as the chunks.
    [hit, *_] = rt.store.query(rt.embedder.embed(got["documents"])[0], 1)
    assert hit.chunk.id == got["ids"][0] and hit.score > 0.95
    rt.close()

    # A reader on the other backend refuses the index rather than mixing vectors.
    with pytest.raises(StoreError, match=r"all-MiniLM-L6-v2\+onnx-int8"):
        VectorStore(rt.config.storage.chroma_path, "all-MiniLM-L6-v2", create=False)


def _torch_index(runtime_factory, tmp_path: Path, source: Path) -> tuple[Path, int]:
    rt = runtime_factory(config(tmp_path, source, backend="torch"))
    rt.indexer.sync()
    count = rt.indexer.store.count()
    rt.close()
    return rt.config.storage.chroma_path, count


def _unchanged(chroma: Path, count: int) -> None:
    store = VectorStore(chroma, "all-MiniLM-L6-v2", create=False)
    assert store.count() == count > 0


def test_missing_onnxruntime_is_one_clear_error_and_the_index_is_kept(
    runtime_factory, tmp_path, source, monkeypatch
):
    chroma, count = _torch_index(runtime_factory, tmp_path, source)
    monkeypatch.setattr(embeddings, "_cache", {})  # not the session's loaded models
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    rt = runtime_factory(config(tmp_path, source, backend="onnx-int8"))
    with pytest.raises(EmbeddingError, match="'onnx-int8': needs the onnxruntime package"):
        rt.indexer.sync()
    _unchanged(chroma, count)


def test_failed_export_is_one_clear_error_and_leaves_no_file(
    runtime_factory, tmp_path, source, monkeypatch
):
    chroma, count = _torch_index(runtime_factory, tmp_path, source)

    def broken(_folder, dest):
        Path(dest).write_bytes(b"half a model")
        raise RuntimeError("the exporter gave up")

    monkeypatch.setattr(embeddings, "_cache", {})
    monkeypatch.setattr(onnx, "export_onnx", broken)
    rt = runtime_factory(config(tmp_path, source, backend="onnx"))
    with pytest.raises(EmbeddingError, match="'onnx': exporting .* gave up.*not touched"):
        rt.indexer.sync()
    _unchanged(chroma, count)
    assert not [p for p in (tmp_path / "data" / "models").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("embedding", "field"),
    [
        ({"backend": "onnx-fp16"}, "backend"),
        ({"backend": "ONNX"}, "backend"),
        ({"threads": 0}, "threads"),
    ],
)
def test_config_rejects_bad_backend_settings(tmp_path, embedding, field):
    with pytest.raises(ConfigError, match=field) as err:
        make_config(tmp_path, embedding=embedding)
    if field == "backend":
        assert "'torch', 'onnx' or 'onnx-int8'" in str(err.value)


def test_config_accepts_each_backend(tmp_path):
    for backend in ("torch", "onnx", "onnx-int8"):
        assert make_config(tmp_path, embedding={"backend": backend}).embedding.backend == backend
