"""The sentence encoder on ONNX Runtime: exported from the local weights once, then cached.

``embedding.backend: onnx`` runs the model's transformer exported to ONNX (fp32);
``onnx-int8`` runs the same graph with its matrix multiplications dynamically quantised to
int8. Both are made here, on this machine, from the model folder (nothing is downloaded),
and kept in ``<cache_dir>/<model key>/``, so the export happens once per model and backend.

sentence-transformers' own ONNX backend needs ``optimum-onnx``, whose releases pin
``transformers<4.58`` while sentence-transformers 6 needs ``transformers>=5``: the two cannot
be installed together, so the export (``torch.onnx``), the quantisation (onnxruntime's
``quantize_dynamic``) and the pooling are done here instead. Only mean pooling is
supported, which is what the bundled all-MiniLM-L6-v2 uses; inference needs neither torch
nor transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from indexer.model_errors import EmbeddingError

log = logging.getLogger(__name__)

ONNX_BACKENDS = ("onnx", "onnx-int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FILES = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
# Files whose change means another model: their names, sizes and mtimes key the cache.
_KEYED = ("config.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin")


def _fail(backend: str, what: str, cause: BaseException | None = None) -> EmbeddingError:
    detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
    return EmbeddingError(
        f"embedding.backend {backend!r}: {what}{detail}. The index was not touched; "
        "fix this or set embedding.backend: torch"
    )


def _require_onnxruntime(backend: str) -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise _fail(backend, "needs the onnxruntime package (pip install onnxruntime)", e) from e
    return onnxruntime


def cache_folder(cache_dir: Path, name: str, folder: Path) -> Path:
    """Where the ONNX files of the model in ``folder`` are kept: one folder per model,
    named for it and keyed by its files, so a changed local model is exported anew."""
    digest = hashlib.sha256()
    for file in _KEYED:
        path = folder / file
        if path.is_file():
            st = path.stat()
            digest.update(f"{file}:{st.st_size}:{st.st_mtime_ns};".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"
    return cache_dir / f"{slug}-{digest.hexdigest()[:12]}"


def onnx_file(backend: str, model: str, folder: Path, cache_dir: Path) -> Path:
    """The cached ONNX file of ``model`` (in ``folder``) for ``backend``, exported (and
    quantised) first if missing. Both backends share the model's folder: int8 is made
    from the fp32 export."""
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"not an ONNX backend: {backend!r}")
    _require_onnxruntime(backend)
    where = cache_folder(cache_dir, model, folder)
    fp32 = where / _FILES["onnx"]
    target = where / _FILES[backend]
    if target.is_file():
        return target
    try:
        where.mkdir(parents=True, exist_ok=True)
        if not fp32.is_file():
            log.warning("exporting embedding model %s to ONNX in %s (once)", model, where)
            with _replacing(fp32) as tmp:
                export_onnx(folder, tmp)
        if backend == "onnx-int8":
            log.warning("quantising embedding model %s to int8 in %s (once)", model, where)
            with _replacing(target) as tmp:
                quantize_int8(fp32, tmp)
    except EmbeddingError:
        raise
    except Exception as e:  # torch.onnx and onnx raise many types; all mean "no model file"
        raise _fail(backend, f"exporting {model} from {folder} to ONNX failed", e) from e
    return target


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary path that becomes ``target`` in one rename if the block succeeds, so a
    reader (or a second process exporting at the same time) never sees half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(folder: Path, dest: Path) -> None:
    """Export the transformer in ``folder`` to ``dest``: token ids in, last hidden state
    out, batch and sequence dimensions dynamic."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(
        str(folder), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    names = [n for n in _INPUTS if n != "token_type_ids" or model.config.type_vocab_size]

    class Hidden(torch.nn.Module):
        """transformers 5 models take their inputs by keyword only."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter's notes on tracing concern shapes that the dynamic axes cover.
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript, and this graph is small.
        torch.onnx.export(
            Hidden(),
            sample,
            str(dest),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


class _QuietQuantizer(logging.Filter):
    """onnxruntime's quantiser logs a line per tensor, and a hint to pre-process, on the
    root logger: neither helps whoever runs `kbot sync`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing" not in record.getMessage()


def quantize_int8(source: Path, dest: Path) -> None:
    """Dynamic int8 quantisation of the matrix multiplications, weights per channel.

    Measured on the bundled model (docs/BENCHMARKS.md): quantising only MatMul runs about
    twice as fast as onnxruntime's default operator set (which also quantises the embedding
    Gather), and per-channel weights keep the vectors' cosine to fp32 above 0.97 where
    per-tensor ones fell to 0.90 on short texts."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietQuantizer()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            str(source),
            str(dest),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def _pooling(folder: Path, backend: str) -> None:
    """Refuse a model whose sentence-transformers pooling is not the mean of its tokens."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return  # a bare transformers folder: sentence-transformers would mean-pool it too
    for module in json.loads(modules.read_text(encoding="utf-8")):
        if module.get("type", "").endswith("Pooling"):
            config = folder / module.get("path", "") / "config.json"
            pooling = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
            if modes != ["pooling_mode_mean_tokens"]:
                raise _fail(backend, f"supports mean pooling only, and {folder} uses {modes}")


def _max_seq_length(folder: Path) -> int:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int):
            return value
    model = folder / "config.json"
    return int(json.loads(model.read_text(encoding="utf-8")).get("max_position_embeddings", 512))


class OnnxEmbedder:
    """A sentence-transformers model's ONNX export on ONNX Runtime's CPU provider: the
    model's own tokenizer, mean pooling over the attention mask, unit-length vectors."""

    def __init__(
        self,
        model: str,
        folder: Path,
        backend: str,
        cache_dir: Path,
        threads: int | None = None,
    ):
        self.name = f"{model}+{backend}"
        self.backend = backend
        ort = _require_onnxruntime(backend)
        _pooling(folder, backend)
        self.path = onnx_file(backend, model, folder, cache_dir)
        try:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self.tokenizer.no_padding()  # batches are padded here, after sorting by length
            self.tokenizer.enable_truncation(_max_seq_length(folder))
            options = ort.SessionOptions()
            # 0 lets onnxruntime use one thread per physical core.
            options.intra_op_num_threads = threads or 0
            options.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: as fast on this 2-core machine, a
            # quarter less CPU, and none taken from Chroma or a question during a sync.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # a corrupt cached file or a folder without tokenizer.json
            raise _fail(backend, f"cannot load {self.path}", e) from e
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        # Stripped, as sentence-transformers does; sorted by length so a batch pads little.
        encodings = self.tokenizer.encode_batch([t.strip() for t in texts])
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            feeds = {n: np.zeros((len(rows), width), np.int64) for n in self.inputs}
            for r, i in enumerate(rows):
                e = encodings[i]
                n = len(e.ids)
                feeds["input_ids"][r, :n] = e.ids
                feeds["attention_mask"][r, :n] = e.attention_mask
                if "token_type_ids" in feeds:
                    feeds["token_type_ids"][r, :n] = e.type_ids
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[rows] = pooled / norms
        return out
