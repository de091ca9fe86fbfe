"""kbot benchmark: indexing throughput, re-sync cost and question latency on the real corpus.

One run, for each embedding backend (``embedding.backend``: torch, onnx, onnx-int8) in its
own fresh temporary data dir, with its model loaded once:

1. the bare encoder on the same chunk texts the indexer will embed, in the same batches;
2. a full sync of the corpus through the real Indexer (chunks per second, and the share of
   the bare encoder's throughput that survives reading, chunking, Chroma and SQL); for the
   default backend steps 1 and 2 alternate ``--pairs`` times, each sync in a fresh data
   dir, so a busy moment of the shared machine shows as spread rather than as the result;
3. no-change re-syncs (incremental, as `kbot sync` runs, and `--full`);
4. `ask` latency over the dev questions, end to end and for the retrieve stage;
5. the dev-set eval (`kbot eval`'s measures) on that index;
6. the resident memory of `kbot serve` over that index, after answering a few questions.

Before them, ``--tune`` times each backend's bare encoder on a sample of the chunks for a
few ``embedding.batch_size`` and ``embedding.threads`` values.

The figures are printed and written as the results section of docs/BENCHMARKS.md: the
default backend's in full, and every backend side by side.
Usage: ``.venv/bin/python bench/run.py [--quick [N]] [--backends LIST] [--pairs N] [--tune]
[--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from bot.review.evaluation import CHARS, SHARES, load_questions, summarize
from bot.review.evaluation import run as run_eval
from bot.runtime import Runtime
from config import KbotConfig, parse_config
from config.models import EmbeddingConfig
from connectors import build_connector
from indexer.chunking import Chunker
from indexer.embeddings import (
    BACKENDS,
    DEFAULT_MODEL,
    Embedder,
    SentenceTransformerEmbedder,
    model_folder,
)
from indexer.onnx import OnnxEmbedder
from indexer.sync import EMBED_BATCH_CHUNKS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "docs" / "BENCHMARKS.md"
MARKER = "<!-- Results below are written by bench/run.py; edit the text above this line only. -->"

# The targets the results are judged against.
TARGET_RATIO = 0.90
TARGET_RESYNC_S = 3.0
TARGET_ASK_P95_MS = 150.0
# The default backend's full sync against torch's, in the same run (issue 19).
TARGET_SPEEDUP = 1.6
# Largest loss on a share measure of the dev eval (hit@5, recall@5, ...) against torch.
TARGET_EVAL_LOSS = 0.01
TARGET_RSS_MB = 1024.0
# Bare-encoder / full-sync pairs, alternated, for the default backend (others run one).
PAIRS = 3
# --tune: the first this many chunks, and the settings tried on them.
TUNE_CHUNKS = 256
TUNE_BATCH_SIZES = (16, 32, 64, 128)
TUNE_THREADS = (1, 2)
# Questions `kbot serve` answers before its memory is read.
RSS_QUESTIONS = 5
# Other processes using more than this share of the machine make the run "shared".
SHARED_CPU_THRESHOLD = 0.05

INTRO = f"""# Benchmarks

`make bench` (`.venv/bin/python bench/run.py`) measures, in one run on the real corpus
(`../shared/corpus`) and in a fresh temporary data dir, with the embedding model loaded once:

- **Full sync**: the real `Indexer` over a filesystem connector: documents, chunks,
  seconds, chunks per second.
- **Indexing efficiency**: end-to-end chunks/s divided by the bare encoder's chunks/s on
  the same chunk texts, embedded in the same batches (`EMBED_BATCH_CHUNKS` chunks per
  call, `embedding.batch_size`). Target: at least {TARGET_RATIO:.0%}. For the default
  backend the bare encoder and the full sync alternate `--pairs` times ({PAIRS} by default),
  each sync in a fresh data dir: the ratio is that of the median pair, with the spread.
- **No-change re-sync**: syncing again with nothing changed, incremental (`kbot sync`)
  and `--full`. Target: under {TARGET_RESYNC_S:g} s.
- **`ask` latency**: `AnsweringService.ask` over `eval/dev_questions.jsonl`, each question
  several times, model loaded; plus the retrieve stage from `Answer.latency_ms`.
  Target: p95 under {TARGET_ASK_P95_MS:g} ms.
- **Backends side by side** (`embedding.backend`): all of the above for torch, onnx and
  onnx-int8, each in its own data dir, plus the dev eval on each index and the resident
  memory of `kbot serve` over it after {RSS_QUESTIONS} questions. Targets: the default
  backend's full sync at least {TARGET_SPEEDUP:g}× torch's chunks/s; no share measure of
  the eval more than {TARGET_EVAL_LOSS:g} below torch's; RSS at most {TARGET_RSS_MB:g} MB.

The bare encoder is timed before the sync, after a warm-up batch, so neither timing pays
for loading the model. "Others' CPU" is the share of the machine's CPU that other
processes used during a phase (from `/proc/stat`): when it is high the figures are
pessimistic, because the machine was shared. `--quick [N]` runs the same steps on N
documents as a smoke test (and writes results only when `--out` is given).

{MARKER}
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- measuring -----------------------------------------------------------------------------


def _busy_ticks() -> int:
    """CPU ticks spent busy by the whole machine since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Span:
    """One timed phase: wall seconds, and how busy the machine was meanwhile."""

    wall: float = 0.0
    own_cpu: float = 0.0
    others_cpu: float = 0.0

    @property
    def others_share(self) -> float:
        """Share of the machine's total CPU capacity that other processes used."""
        cores = os.cpu_count() or 1
        return max(self.others_cpu, 0.0) / (self.wall * cores) if self.wall else 0.0


@contextmanager
def measure() -> Iterator[Span]:
    span = Span()
    tick = os.sysconf("SC_CLK_TCK")
    busy0, own0, t0 = _busy_ticks(), _own_cpu(), time.perf_counter()
    try:
        yield span
    finally:
        span.wall = time.perf_counter() - t0
        span.own_cpu = _own_cpu() - own0
        span.others_cpu = (_busy_ticks() - busy0) / tick - span.own_cpu


@dataclass
class Stopwatch:
    """Times each call to chosen methods of live objects, to break a phase down."""

    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _restore: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, obj: Any, method: str, label: str) -> None:
        original = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls[label].append(time.perf_counter() - t)

        setattr(obj, method, timed)
        # The wrapper is an instance attribute shadowing the class's method.
        self._restore.append(lambda: delattr(obj, method))

    def unwrap(self) -> None:
        for restore in self._restore:
            restore()
        self._restore.clear()

    def totals(self) -> dict[str, float]:
        return {label: sum(times) for label, times in self.calls.items()}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# -- setup ---------------------------------------------------------------------------------


def quick_subset(corpus: Path, n: int, dest: Path) -> Path:
    """Copy n documents spread over the whole corpus (keeping mtimes) into ``dest``."""
    full = make_config(dest, corpus)
    ids = sorted(build_connector(full.connectors[0], full.storage.data_dir).list_ids())
    step = max(len(ids) // n, 1)
    for rel in ids[::step][:n]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpus / rel, target)
    return dest


def config_data(
    tmp: Path, corpus: Path, backend: str | None = None, args: argparse.Namespace | None = None
) -> dict[str, Any]:
    """The default config, storing in ``tmp``, with one filesystem connector on the corpus;
    ``backend`` and ``args``' batch size and threads set its embedding section."""
    data: dict[str, Any] = {
        "storage": {"data_dir": str(tmp / "data")},
        "connectors": [
            {"name": "corpus", "type": "filesystem", "path": str(corpus), "schedule": "1h"}
        ],
    }
    embedding: dict[str, Any] = {}
    if backend is not None:
        embedding["backend"] = backend
    if args is not None and args.batch_size is not None:
        embedding["batch_size"] = args.batch_size
    if args is not None and args.threads is not None:
        embedding["threads"] = args.threads
    if embedding:
        data["embedding"] = embedding
    return data


def make_config(tmp: Path, corpus: Path) -> KbotConfig:
    """The default config, storing in ``tmp``, with one filesystem connector on the corpus."""
    return parse_config(config_data(tmp, corpus), source="bench", base_dir=tmp)


# -- the phases ----------------------------------------------------------------------------


@dataclass
class Pair:
    """One bare-encoder run and the full sync right after it."""

    bare: Span
    sync: Span
    breakdown: dict[str, float]
    ratio: float
    cpu_ratio: float


@dataclass
class Results:
    backend: str = "torch"
    load_s: float = 0.0
    rss_mb: float = 0.0
    rss_peak_mb: float = 0.0
    serve_torch: bool = False
    eval: dict[str, Any] | None = None
    documents: int = 0
    chunks: int = 0
    problems: int = 0
    sync: Span = field(default_factory=Span)
    sync_breakdown: dict[str, float] = field(default_factory=dict)
    bare_chunks: int = 0
    bare_batches: int = 0
    bare: Span = field(default_factory=Span)
    pairs: list[Pair] = field(default_factory=list)
    chunking_s: float = 0.0
    resync: Span = field(default_factory=Span)
    resync_full: Span = field(default_factory=Span)
    resync_changed: int = 0
    asks: int = 0
    abstained: int = 0
    ask_ms: list[float] = field(default_factory=list)
    retrieve_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    question_embed_ms: list[float] = field(default_factory=list)
    chroma_query_ms: list[float] = field(default_factory=list)
    keyword_search_ms: list[float] = field(default_factory=list)
    ask_span: Span = field(default_factory=Span)
    whole: Span = field(default_factory=Span)

    @property
    def sync_rate(self) -> float:
        return self.chunks / self.sync.wall if self.sync.wall else 0.0

    @property
    def bare_rate(self) -> float:
        return self.bare_chunks / self.bare.wall if self.bare.wall else 0.0

    @property
    def ratio(self) -> float:
        return self.sync_rate / self.bare_rate if self.bare_rate else 0.0

    @property
    def cpu_ratio(self) -> float:
        """The ratio in chunks per CPU-second of this process: less sensitive to a busy machine."""
        if not (self.sync.own_cpu and self.bare.own_cpu and self.bare_chunks):
            return 0.0
        return (self.chunks / self.sync.own_cpu) / (self.bare_chunks / self.bare.own_cpu)

    def keep_pair(self) -> None:
        """Record the bare run and sync just measured as a pair."""
        self.pairs.append(
            Pair(self.bare, self.sync, dict(self.sync_breakdown), self.ratio, self.cpu_ratio)
        )

    def use_median_pair(self) -> None:
        """Report the pair of median ratio (the lower of the two middle ones for an even
        count), so that one slowed run decides neither way."""
        if not self.pairs:
            return
        pair = sorted(self.pairs, key=lambda p: p.ratio)[(len(self.pairs) - 1) // 2]
        self.bare, self.sync, self.sync_breakdown = pair.bare, pair.sync, dict(pair.breakdown)

    def ratio_text(self) -> str:
        """The ratio, and with several pairs each pair's and their spread."""
        if len(self.pairs) < 2:
            return f"{self.ratio:.1%}"
        each = ", ".join(f"{p.ratio:.1%}" for p in self.pairs)
        low, high = min(p.ratio for p in self.pairs), max(p.ratio for p in self.pairs)
        return (
            f"{self.ratio:.1%} (median of {len(self.pairs)} pairs: {each}; "
            f"spread {(high - low) * 100:.1f} points)"
        )


def chunk_batches(config: KbotConfig) -> tuple[list[list[str]], float]:
    """The chunk texts the indexer will embed, grouped into the batches it will use, and
    the seconds that chunking took."""
    cfg = config.connectors[0]
    docs = list(build_connector(cfg, config.storage.data_dir).load_all())
    chunker = Chunker(config.indexer.chunk_size, config.indexer.chunk_overlap)
    t = time.perf_counter()
    batches: list[list[str]] = []
    pending: list[str] = []
    # The same grouping as Indexer._sync: whole documents until EMBED_BATCH_CHUNKS is reached.
    for doc in docs:
        pending += [c.embedding_text() for c in chunker.split(doc)]
        if len(pending) >= EMBED_BATCH_CHUNKS:
            batches.append(pending)
            pending = []
    if pending:
        batches.append(pending)
    return batches, time.perf_counter() - t


def bare_encoder(config: KbotConfig, embedder: Embedder, res: Results) -> None:
    """Embed the chunks the indexer will embed, grouped into the batches it will use."""
    batches, res.chunking_s = chunk_batches(config)
    res.bare_chunks = sum(len(b) for b in batches)
    res.bare_batches = len(batches)
    batch_size = config.embedding.batch_size
    log(f"bare encoder ({res.backend}): {res.bare_chunks} chunks; warming up")
    if batches:
        embedder.embed(batches[0][:batch_size], batch_size=batch_size)
    with measure() as res.bare:
        for texts in batches:
            embedder.embed(texts, batch_size=batch_size)
    log(f"bare encoder ({res.backend}): {res.bare.wall:.1f} s, {res.bare_rate:.1f} chunks/s")


def full_sync(rt: Runtime, res: Results) -> None:
    indexer = rt.indexer  # opens Chroma and the database before the clock starts
    watch = Stopwatch()
    watch.wrap(indexer.embedder, "embed", "embedding")
    watch.wrap(indexer.store, "upsert", "Chroma upsert")
    watch.wrap(indexer.chunker, "split", "chunking")
    log("full sync: started")
    try:
        with measure() as res.sync:
            (result,) = indexer.sync()
    finally:
        watch.unwrap()
    if not result.ok:
        raise SystemExit(f"the sync failed: {result.error}")
    res.documents, res.chunks, res.problems = result.added, result.chunks, result.failed
    res.sync_breakdown = watch.totals()
    rest = res.sync.wall - sum(res.sync_breakdown.values())
    res.sync_breakdown["reading, parsing, SQL, other"] = rest
    log(
        f"full sync ({res.backend}): {res.documents} docs, {res.chunks} chunks, "
        f"{res.sync.wall:.1f} s, {res.sync_rate:.1f} chunks/s"
    )
    if res.chunks != res.bare_chunks:
        log(f"warning: the sync made {res.chunks} chunks, the bare run {res.bare_chunks}")


def resyncs(rt: Runtime, res: Results) -> None:
    with measure() as res.resync:
        (result,) = rt.indexer.sync()
    changed = result.added + result.updated + result.deleted
    with measure() as res.resync_full:
        (full,) = rt.indexer.sync(full=True)
    res.resync_changed = changed + full.added + full.updated + full.deleted
    log(f"re-sync: {res.resync.wall:.2f} s; --full: {res.resync_full.wall:.2f} s")


def asks(rt: Runtime, questions: list[str], repeats: int, res: Results) -> None:
    service = rt.answering
    service.ask(questions[0])  # warm-up: first query paths in Chroma and SQL
    watch = Stopwatch()
    watch.wrap(rt.embedder, "embed", "embed")
    watch.wrap(rt.store, "query", "query")
    watch.wrap(rt.lexical, "search", "keywords")
    try:
        with measure() as res.ask_span:
            for _ in range(repeats):
                for q in questions:
                    t = time.perf_counter()
                    answer = service.ask(q)
                    res.ask_ms.append((time.perf_counter() - t) * 1000)
                    res.retrieve_ms.append(answer.latency_ms["retrieve"])
                    res.answer_ms.append(answer.latency_ms["answer"])
                    res.abstained += answer.abstained
    finally:
        watch.unwrap()
    res.question_embed_ms = [s * 1000 for s in watch.calls["embed"]]
    res.chroma_query_ms = [s * 1000 for s in watch.calls["query"]]
    res.keyword_search_ms = [s * 1000 for s in watch.calls["keywords"]]
    res.asks = len(res.ask_ms)
    log(f"ask: p50 {pct(res.ask_ms, 50):.1f} ms, p95 {pct(res.ask_ms, 95):.1f} ms")


@dataclass
class Tuned:
    backend: str
    batch_size: int
    threads: int
    span: Span
    chunks: int

    @property
    def rate(self) -> float:
        return self.chunks / self.span.wall if self.span.wall else 0.0


def tune(config: KbotConfig, backends: list[str], cache_dir: Path) -> list[Tuned]:
    """Each backend's bare encoder on the first TUNE_CHUNKS chunks, for every batch size
    and thread count tried: the settings a 2-core machine should use."""
    import torch

    batches, _ = chunk_batches(config)
    texts = [t for batch in batches for t in batch][:TUNE_CHUNKS]
    torch_threads = torch.get_num_threads()
    out: list[Tuned] = []
    try:
        for backend in backends:
            for threads in TUNE_THREADS:
                # Made here, not by get_embedder, so that each is freed after its turn.
                folder = model_folder(config.embedding.model)
                embedder: Embedder = (
                    SentenceTransformerEmbedder(DEFAULT_MODEL, folder, threads)
                    if backend == "torch"
                    else OnnxEmbedder(DEFAULT_MODEL, folder, backend, cache_dir, threads)
                )
                embedder.embed(texts[:16], batch_size=16)  # warm-up
                for batch_size in TUNE_BATCH_SIZES:
                    with measure() as span:
                        embedder.embed(texts, batch_size=batch_size)
                    out.append(Tuned(backend, batch_size, threads, span, len(texts)))
                    log(
                        f"tune {backend}: threads {threads}, batch {batch_size}: "
                        f"{out[-1].rate:.1f} chunks/s"
                    )
    finally:
        torch.set_num_threads(torch_threads)
    return out


def dev_eval(rt: Runtime, questions_path: Path, res: Results) -> None:
    """`kbot eval`'s measures for this backend's index (extractive answers)."""
    questions = load_questions(questions_path)
    res.eval = summarize(run_eval(rt, questions))
    log(f"eval ({res.backend}): hit@5 {res.eval['hit@5']}, mrr@10 {res.eval['mrr@10']}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_rss(config_data: dict[str, Any], tmp: Path, questions: list[str], res: Results) -> None:
    """Start `kbot serve` over this backend's index, ask it a few questions over HTTP, and
    read its resident memory (now and at its peak) from /proc."""
    import yaml

    path = tmp / f"serve-{res.backend}.yaml"
    path.write_text(yaml.safe_dump(config_data), encoding="utf-8")
    port = _free_port()
    kbot = [sys.executable, "-c", "from bot.cli import main; main()"]
    cmd = [*kbot, "--config", str(path), "serve", "--no-scheduler", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"kbot serve ({res.backend}) did not start: {err}") from None
                time.sleep(0.5)
        for q in questions[:RSS_QUESTIONS]:
            body = json.dumps({"question": q}).encode()
            req = urllib.request.Request(
                f"{base}/api/ask", body, {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=60).read()
        with open(f"/proc/{proc.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        res.rss_mb = int(status["VmRSS"].split()[0]) / 1024
        res.rss_peak_mb = int(status["VmHWM"].split()[0]) / 1024
        with open(f"/proc/{proc.pid}/maps") as f:
            res.serve_torch = "libtorch" in f.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    log(f"serve ({res.backend}): RSS {res.rss_mb:.0f} MB (peak {res.rss_peak_mb:.0f} MB)")


def run_backend(
    backend: str,
    tmp: Path,
    corpus: Path,
    args: argparse.Namespace,
    questions: list[str],
    pairs: int = 1,
) -> Results:
    """Every phase for one backend, in its own data dir. The bare encoder and the full sync
    alternate ``pairs`` times, each sync in a fresh data dir; the later phases use the last."""
    res = Results(backend=backend)
    for i in range(pairs):
        last = i == pairs - 1
        where = tmp / backend if last else tmp / f"{backend}-pair{i}"
        data = config_data(where, corpus, backend, args)
        config = parse_config(data, source=f"bench ({backend})", base_dir=tmp)
        # The exports made by --tune are reused, so loading here does not pay for them.
        models = config.storage.data_dir / "models"
        models.parent.mkdir(parents=True, exist_ok=True)
        if not models.exists():
            models.symlink_to(tmp / "models", target_is_directory=True)
        rt = Runtime(config)
        try:
            log(f"loading the embedding model ({backend})")
            t = time.perf_counter()
            embedder = rt.embedder
            if i == 0:
                res.load_s = time.perf_counter() - t
            bare_encoder(config, embedder, res)
            full_sync(rt, res)
            res.keep_pair()
            if pairs > 1:
                log(f"pair {i + 1} of {pairs} ({backend}): end to end {res.ratio:.1%} of bare")
            if last:
                res.use_median_pair()
                resyncs(rt, res)
                asks(rt, questions, args.repeats, res)
                if not args.no_eval:
                    dev_eval(rt, args.questions, res)
        finally:
            rt.close()
        if not last:
            shutil.rmtree(where, ignore_errors=True)
    if not args.no_serve:
        serve_rss(data, tmp, questions, res)
    return res


# -- the report ----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import chromadb
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {
        "CPU": cpu,
        "Cores": f"{os.cpu_count()} (torch threads: {torch.get_num_threads()})",
        "RAM": f"{kib / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "sentence-transformers": version("sentence-transformers"),
        "onnxruntime": version("onnxruntime"),
        "chromadb": chromadb.__version__,
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(res: Results, args: argparse.Namespace, started: datetime, facts: dict[str, str]) -> str:
    phases = (
        {
            name: span
            for n, p in enumerate(res.pairs, 1)
            for name, span in (
                (f"bare encoder (pair {n})", p.bare),
                (f"full sync (pair {n})", p.sync),
            )
        }
        if len(res.pairs) > 1
        else {"bare encoder": res.bare, "full sync": res.sync}
    )
    spans = {
        **phases,
        "re-syncs": Span(
            res.resync.wall + res.resync_full.wall,
            res.resync.own_cpu + res.resync_full.own_cpu,
            res.resync.others_cpu + res.resync_full.others_cpu,
        ),
        "asks": res.ask_span,
    }
    scope = f"quick run on {args.quick} documents" if args.quick else "full corpus"
    lines = [
        "## Results",
        "",
        f"Run {started.astimezone().strftime('%Y-%m-%d %H:%M %Z')} "
        f"({started.strftime('%Y-%m-%dT%H:%M:%SZ')}), {scope}, "
        f"{res.whole.wall / 60:.1f} min in all.",
        "",
        "| Machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "### Indexing",
        "",
        "| Measure | Value | Target |",
        "| --- | --- | --- |",
        f"| Documents indexed (skipped) | {res.documents} ({res.problems}) | |",
        f"| Chunks | {res.chunks} | |",
        f"| Full sync | {res.sync.wall:.1f} s, {res.sync_rate:.1f} chunks/s | |",
        f"| Bare encoder, same {res.bare_chunks} chunks in {res.bare_batches} batches "
        f"| {res.bare.wall:.1f} s, {res.bare_rate:.1f} chunks/s | |",
        f"| End-to-end ÷ bare | {res.ratio_text()} | ≥ {TARGET_RATIO:.0%}: "
        f"{_verdict(res.ratio >= TARGET_RATIO)} |",
        f"| … the same in chunks per CPU-second of this process | {res.cpu_ratio:.1%} | |",
        f"| No-change re-sync (incremental) | {res.resync.wall:.2f} s "
        f"| < {TARGET_RESYNC_S:g} s: {_verdict(res.resync.wall < TARGET_RESYNC_S)} |",
        f"| No-change re-sync (`--full`) | {res.resync_full.wall:.2f} s "
        f"| < {TARGET_RESYNC_S:g} s: {_verdict(res.resync_full.wall < TARGET_RESYNC_S)} |",
        "",
        "Where the full sync's time went (timed around the indexer's calls"
        + (", the median pair" if len(res.pairs) > 1 else "")
        + "):",
        "",
        "| Part | Seconds | Share |",
        "| --- | --- | --- |",
        *(f"| {k} | {v:.1f} | {v / res.sync.wall:.1%} |" for k, v in res.sync_breakdown.items()),
        "",
        f"Chunking the corpus alone (in the bare run) took {res.chunking_s:.1f} s.",
        "",
        "### Answering",
        "",
        f"{res.asks} asks ({len(res.ask_ms) // max(args.repeats, 1)} questions × {args.repeats}, "
        f"{res.abstained} abstained), after one warm-up ask.",
        "",
        "| Measure | p50 | p95 | Target |",
        "| --- | --- | --- | --- |",
        f"| `ask` end to end (incl. query log write) | {pct(res.ask_ms, 50):.1f} ms "
        f"| {pct(res.ask_ms, 95):.1f} ms | p95 < {TARGET_ASK_P95_MS:g} ms: "
        f"{_verdict(pct(res.ask_ms, 95) < TARGET_ASK_P95_MS)} |",
        "| retrieve stage (embed question, Chroma and BM25 search, fusion) "
        f"| {pct(res.retrieve_ms, 50):.1f} ms "
        f"| {pct(res.retrieve_ms, 95):.1f} ms | |",
        f"| … of which: embedding the question | {pct(res.question_embed_ms, 50):.1f} ms "
        f"| {pct(res.question_embed_ms, 95):.1f} ms | |",
        f"| … of which: Chroma query | {pct(res.chroma_query_ms, 50):.1f} ms "
        f"| {pct(res.chroma_query_ms, 95):.1f} ms | |",
        f"| … of which: BM25 keyword search | {pct(res.keyword_search_ms, 50):.1f} ms "
        f"| {pct(res.keyword_search_ms, 95):.1f} ms | |",
        f"| answer stage (extractive composition) | {pct(res.answer_ms, 50):.1f} ms "
        f"| {pct(res.answer_ms, 95):.1f} ms | |",
        "",
        "### Notes",
        "",
        "| Phase | Wall | This process's CPU | Others' CPU |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {s.wall:.1f} s | {s.own_cpu / s.wall if s.wall else 0:.2f} cores "
            f"| {s.others_share:.0%} of the machine |"
            for name, s in spans.items()
        ),
        "",
    ]
    shared = [n for n, s in spans.items() if s.others_share > SHARED_CPU_THRESHOLD]
    if shared:
        lines.append(
            f"- This run shared the CPU with other processes (during: {', '.join(shared)}); "
            "the affected figures are slower than on an idle machine, and the ratio compares "
            "phases that may have had different amounts of CPU."
        )
    else:
        lines.append("- The machine was otherwise idle during this run.")
    if res.resync_changed:
        lines.append(f"- The no-change re-syncs still changed {res.resync_changed} documents.")
    if res.chunks != res.bare_chunks:
        lines.append(
            f"- The sync made {res.chunks} chunks but the bare run {res.bare_chunks}: "
            "the ratio compares different work."
        )
    return "\n".join(lines) + "\n"


def _ms(values: list[float]) -> str:
    return f"{pct(values, 50):.1f} / {pct(values, 95):.1f}"


def _ratio_cell(r: Results) -> str:
    if len(r.pairs) < 2:
        return f"{r.ratio:.1%}"
    low, high = min(p.ratio for p in r.pairs), max(p.ratio for p in r.pairs)
    return f"{r.ratio:.1%} ({low:.1%}–{high:.1%}, {len(r.pairs)} pairs)"


def _loss(measure: str, value: float, base: float) -> float:
    """How much worse ``value`` is than ``base`` (false_abstain is worse when higher)."""
    return value - base if measure == "false_abstain" else base - value


def _eval_cell(measure: str, value: float | None, base: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if measure in CHARS else f"{value:.4f}"
    if base is None:
        return text
    over = measure in SHARES and _loss(measure, value, base) > TARGET_EVAL_LOSS
    delta = f"{value - base:+.1f}" if measure in CHARS else f"{value - base:+.4f}"
    return f"{text} ({delta}){' **over**' if over else ''}"


def eval_losses(res: Results, torch_res: Results) -> dict[str, float]:
    """Share measures on which ``res`` is worse than torch, by how much (false_abstain is
    worse when higher)."""
    out: dict[str, float] = {}
    if res.eval is None or torch_res.eval is None:
        return out
    for m in SHARES:
        a, b = res.eval.get(m), torch_res.eval.get(m)
        if a is not None and b is not None and _loss(m, a, b) > 0:
            out[m] = _loss(m, a, b)
    return out


def backends_section(
    results: dict[str, Results], tuned: list[Tuned], default: str, args: argparse.Namespace
) -> str:
    """Every backend's figures side by side, the targets for the default, and the tuning."""
    base = results.get("torch")
    lines = [
        "### Embedding backends side by side",
        "",
        f"Each backend in its own data dir, one after the other, `embedding.batch_size` "
        f"{EmbeddingConfig().batch_size if args.batch_size is None else args.batch_size}, "
        f"`embedding.threads` {args.threads or 'default'}. Model load includes the one-time "
        "ONNX export only where no earlier phase made it. Question embedding and `ask` are "
        "p50 / p95 over the asks above; RSS is `kbot serve`'s after "
        f"{RSS_QUESTIONS} questions (peak in brackets).",
        "",
        "| Backend | Model load | Bare encoder | Full sync | × torch | End-to-end ÷ bare "
        "| Embed question (ms) | `ask` (ms) | Serve RSS | torch in serve | Others' CPU (sync) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        speed = f"{r.sync_rate / base.sync_rate:.2f}×" if base and base.sync_rate else "-"
        rss = f"{r.rss_mb:.0f} MB ({r.rss_peak_mb:.0f})" if r.rss_mb else "-"
        lines.append(
            f"| {name}{' (default)' if name == default else ''} | {r.load_s:.1f} s "
            f"| {r.bare_rate:.1f} chunks/s | {r.sync.wall:.1f} s, {r.sync_rate:.1f} chunks/s "
            f"| {speed} | {_ratio_cell(r)} | {_ms(r.question_embed_ms)} | {_ms(r.ask_ms)} "
            f"| {rss} | {'yes' if r.serve_torch else 'no'} | {r.sync.others_share:.0%} |"
        )
    chosen = results.get(default)
    if chosen is not None:
        lines += ["", f"Targets, for the default backend ({default}):", ""]
        if base is not None and base.sync_rate:
            speedup = chosen.sync_rate / base.sync_rate
            lines.append(
                f"- full sync {speedup:.2f}× torch's chunks/s: ≥ {TARGET_SPEEDUP:g}×, "
                f"{_verdict(speedup >= TARGET_SPEEDUP)}"
            )
        lines.append(
            f"- end to end {chosen.ratio_text()} of its bare encoder: ≥ {TARGET_RATIO:.0%}, "
            f"{_verdict(chosen.ratio >= TARGET_RATIO)}"
        )
        if base is not None and chosen.eval is not None and base.eval is not None:
            losses = eval_losses(chosen, base)
            worst = max(losses.values(), default=0.0)
            lines.append(
                f"- dev eval: largest loss on a share measure {worst:.4f} against torch: "
                f"≤ {TARGET_EVAL_LOSS:g}, {_verdict(worst <= TARGET_EVAL_LOSS)}"
            )
        if chosen.rss_mb:
            lines.append(
                f"- serve RSS {chosen.rss_mb:.0f} MB (peak {chosen.rss_peak_mb:.0f}): "
                f"≤ {TARGET_RSS_MB:g} MB, {_verdict(chosen.rss_peak_mb <= TARGET_RSS_MB)}"
            )
    evals = {n: r.eval for n, r in results.items() if r.eval is not None}
    if evals:
        names = list(evals)
        first = next(iter(evals.values()))
        lines += [
            "",
            "Dev eval (`kbot eval --questions dev_questions.jsonl`, extractive), each backend "
            "on its own index; in brackets the difference to torch, **over** where a share "
            f"measure loses more than {TARGET_EVAL_LOSS:g}:",
            "",
            "| Measure | " + " | ".join(names) + " |",
            "| --- |" + " --- |" * len(names),
        ]
        for m, v in first.items():
            if m in ("per_kind", "n", "latency_ms") or not isinstance(v, (int, float)):
                continue
            ref = evals["torch"].get(m) if "torch" in evals else None
            cells = [
                _eval_cell(m, e.get(m), None if n == "torch" else ref) for n, e in evals.items()
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if tuned:
        lines += [
            "",
            f"Tuning (`--tune`): the bare encoder on the first {tuned[0].chunks} chunks, "
            "chunks/s by `embedding.batch_size` (columns) and `embedding.threads` (rows):",
            "",
            "| Backend | Threads | " + " | ".join(str(b) for b in TUNE_BATCH_SIZES) + " |",
            "| --- | --- |" + " --- |" * len(TUNE_BATCH_SIZES),
        ]
        for backend in dict.fromkeys(t.backend for t in tuned):
            for threads in TUNE_THREADS:
                row = {
                    t.batch_size: t for t in tuned if (t.backend, t.threads) == (backend, threads)
                }
                cells = [f"{row[b].rate:.1f}" if b in row else "-" for b in TUNE_BATCH_SIZES]
                lines.append(f"| {backend} | {threads} | " + " | ".join(cells) + " |")
        busy = max(t.span.others_share for t in tuned)
        lines += ["", f"Others' CPU during tuning: up to {busy:.0%} of the machine."]
    return "\n".join(lines) + "\n"


def write(out: Path, section: str) -> None:
    """Replace this script's results below MARKER, keeping the sections other benchmarks
    appended after them (from their first level-2 heading on)."""
    old = out.read_text(encoding="utf-8") if out.is_file() else ""
    head, _, rest = old.partition(MARKER) if MARKER in old else (INTRO.split(MARKER)[0], "", "")
    later = rest.find("\n## ", rest.find("## Results") + 1) if "## Results" in rest else -1
    tail = rest[later:] if later >= 0 else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{MARKER}\n\n{section.rstrip()}\n{tail}", encoding="utf-8")


def write_region(out: Path, start: str, end: str, section: str) -> None:
    """Replace another benchmark's region (``start`` … ``end``) in ``out``, or insert it
    just above this script's results, which every run of this script rewrites."""
    text = out.read_text(encoding="utf-8") if out.is_file() else INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip("\n") + tail
    else:
        head, tail = text.split(MARKER, 1)
        text = f"{head}{section}\n{MARKER}{tail}"
    out.write_text(text, encoding="utf-8")


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    parser.add_argument("--questions", type=Path, default=SHARED / "eval" / "dev_questions.jsonl")
    parser.add_argument("--repeats", type=int, default=3, help="times each question is asked")
    parser.add_argument(
        "--quick",
        type=int,
        nargs="?",
        const=40,
        default=0,
        metavar="N",
        help="smoke run on N documents (default 40); writes results only with --out",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"embedding backends to measure, comma-separated (default {','.join(BACKENDS)})",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=PAIRS,
        help=f"alternated bare-encoder and full-sync runs of the default backend (default {PAIRS})",
    )
    parser.add_argument("--batch-size", type=int, help="embedding.batch_size for every backend")
    parser.add_argument("--threads", type=int, help="embedding.threads for every backend")
    parser.add_argument(
        "--tune", action="store_true", help="first time batch sizes and thread counts"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the dev eval per backend")
    parser.add_argument("--no-serve", action="store_true", help="skip `kbot serve`'s RSS")
    parser.add_argument("--out", type=Path, help=f"Markdown file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.corpus.is_dir():
        parser.error(f"corpus folder {args.corpus} does not exist")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := [b for b in backends if b not in BACKENDS]:
        parser.error(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    questions = [
        json.loads(line)["question"]
        for line in args.questions.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    out = args.out or (None if args.quick else DEFAULT_OUT)
    default = EmbeddingConfig().backend

    started = datetime.now(UTC)
    results: dict[str, Results] = {}
    tuned: list[Tuned] = []
    with (
        tempfile.TemporaryDirectory(prefix="kbot-bench-", ignore_cleanup_errors=True) as tmp,
        measure() as whole,
    ):
        tmp_path = Path(tmp)
        corpus = args.corpus.resolve()
        if args.quick:
            corpus = quick_subset(corpus, args.quick, tmp_path / "corpus")
        (tmp_path / "models").mkdir()
        if args.tune:
            tuned = tune(make_config(tmp_path, corpus), backends, tmp_path / "models")
        for backend in backends:
            pairs = max(args.pairs, 1) if backend == default else 1
            results[backend] = run_backend(backend, tmp_path, corpus, args, questions, pairs)
    main_res = results.get(default) or next(iter(results.values()))
    main_res.whole = whole
    section = report(main_res, args, started, machine())
    section += "\n" + backends_section(results, tuned, default, args)
    print(section)
    if out is not None:
        write(out, section)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
