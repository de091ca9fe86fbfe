"""kbot audience benchmark: retrieval for a restricted requester on a 100k-chunk index.

kbot keeps each audience's chunks in a Chroma collection of their own, so a requester's
search reads only the collections of the audiences they may see (several at once, merged
by similarity). This measures that against an unfiltered search of the whole index at 100k
chunks, for requesters who see a small or a large part of it.

The index is built from the real corpus's chunk vectors: each of the dev index's vectors
is copied with small noise until there are N (so neighbourhoods look like real text, not
uniform noise), with the copies' texts for BM25. Audiences are assigned at random in two
mixes: half the index public, and only 5% public. Queries are the dev questions, embedded
once.

Timed per query, p50/p95 over the dev questions, for two requesters: one who sees only
``public``, and one who sees every audience but ``hr`` (three collections):
- ``unfiltered``: ``VectorStore.query`` over every collection, no audience (the floor);
- ``dense``: the retriever's dense step for the requester;
- ``hybrid``: the whole ``Retriever.search`` (dense + BM25 + fusion), minus embedding, for
  the requester and, as its floor, for an admin who sees everything.

Usage: ``.venv/bin/python bench/audience.py --index DATA_DIR [--chunks 100000] [--out PATH]``
where DATA_DIR is a kbot data dir synced from the corpus. Building the index takes a few
minutes (Chroma's HNSW inserts).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import machine, pct, write_region  # noqa: E402
from bot.answer.retrieval import Retriever, visible_to  # noqa: E402
from bot.review.evaluation import load_questions  # noqa: E402
from config.models import RetrievalConfig  # noqa: E402
from indexer.chunking import Chunk, chunk_id  # noqa: E402
from indexer.embeddings import get_embedder  # noqa: E402
from indexer.lexical import LexicalIndex  # noqa: E402
from indexer.store import VectorStore  # noqa: E402

SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "docs" / "BENCHMARKS.md"
START = "<!-- bench/audience.py:start -->"
END = "<!-- bench/audience.py:end -->"
# Each mix: audience -> share of the chunks. The requester is in none of the restricted ones.
MIXES = {
    "50% public": {"public": 0.50, "sre": 0.20, "finance": 0.15, "hr": 0.15},
    "5% public": {"public": 0.05, "sre": 0.45, "finance": 0.25, "hr": 0.25},
}
CONNECTOR = {a: f"c-{a}" for a in MIXES["50% public"]}
TOP_K = 15


class _Fixed:
    """Stands in for the embedder: the question vectors are computed once, up front."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def source_chunks(index_dir: Path) -> tuple[list[Chunk], np.ndarray]:
    """Every chunk of an existing kbot index with its vector."""
    store = VectorStore(index_dir / "chroma", "all-MiniLM-L6-v2", create=False)
    chunks, vectors = [], []
    got = store.collection.get(include=["documents", "metadatas", "embeddings"])
    from indexer.store import _chunk

    for cid, text, meta, vec in zip(
        got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
    ):
        chunks.append(_chunk(cid, text or "", meta or {}))
        vectors.append(vec)
    return chunks, np.asarray(vectors, dtype=np.float32)


def build(
    folder: Path, chunks: list[Chunk], vectors: np.ndarray, n: int, mix: dict[str, float]
) -> tuple[VectorStore, LexicalIndex]:
    rng = np.random.default_rng(7)
    audiences = rng.choice(list(mix), size=n, p=list(mix.values()))
    made: list[Chunk] = []
    vecs = np.empty((n, vectors.shape[1]), dtype=np.float32)
    for i in range(n):
        src = i % len(chunks)
        aud = str(audiences[i])
        c = chunks[src]
        doc = f"copy{i // len(chunks)}/{c.doc_id}"
        made.append(
            replace(
                c,
                id=chunk_id(CONNECTOR[aud], doc, c.index),
                connector=CONNECTOR[aud],
                doc_id=doc,
                audience=aud,
            )
        )
        v = vectors[src] + rng.normal(0, 0.02, vectors.shape[1]).astype(np.float32)
        vecs[i] = v / np.linalg.norm(v)
    store = VectorStore(folder / "chroma", "all-MiniLM-L6-v2", create=True)
    step = 5000
    for i in range(0, n, step):
        store.upsert(made[i : i + step], vecs[i : i + step])
    lexical = LexicalIndex(folder / "bm25")
    lexical.build([c.id for c in made], [c.search_text() for c in made])
    return store, lexical


def timed(fn, repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run_mix(
    name: str, folder: Path, chunks, vectors, n: int, questions: dict[str, np.ndarray]
) -> dict[str, list[float]]:
    mix = MIXES[name]
    t0 = time.perf_counter()
    store, lexical = build(folder, chunks, vectors, n, mix)
    print(f"{name}: built {store.count()} chunks in {time.perf_counter() - t0:.0f} s")
    config = RetrievalConfig()
    retriever = Retriever(config, lambda: store, lexical, _Fixed(questions), CONNECTOR_AUDIENCE)
    pool = config.candidates
    everyone = frozenset(MIXES[name])
    times: dict[str, list[float]] = {k: [] for k in COLUMNS}
    for q, vec in questions.items():
        times["unfiltered"] += timed(lambda vec=vec: store.query(vec, pool))
        config.mode = "dense"
        for who, seen in REQUESTERS.items():
            times[f"dense {who}"] += timed(lambda q=q, seen=seen: retriever.search(q, pool, seen))
        config.mode = "hybrid"
        times["hybrid all"] += timed(lambda q=q: retriever.search(q, TOP_K, everyone))
        for who, seen in REQUESTERS.items():
            times[f"hybrid {who}"] += timed(lambda q=q, seen=seen: retriever.search(q, TOP_K, seen))
            for mode in ("dense", "hybrid"):
                config.mode = mode
                hits = retriever.search(q, TOP_K, seen)
                leaked = [h.chunk.id for h in hits if h.chunk.audience not in visible_to(seen)]
                assert not leaked, f"hidden chunks returned to {who}: {leaked}"
                assert len(hits) == TOP_K, "a requester got fewer chunks than asked for"
    return times


# Who asks: the audiences they belong to (public is always visible).
REQUESTERS = {"public": frozenset(), "3 of 4": frozenset({"sre", "finance"})}
COLUMNS = (
    "unfiltered",
    "dense public",
    "dense 3 of 4",
    "hybrid all",
    "hybrid public",
    "hybrid 3 of 4",
)
CONNECTOR_AUDIENCE = {c: a for a, c in CONNECTOR.items()}


def report(results: dict[str, dict[str, list[float]]], n: int, started: datetime) -> str:
    facts = machine()
    lines = [
        START,
        "## Audience filtering at scale (`bench/audience.py`)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {facts['CPU']}, {facts['Cores']}, "
        f"chromadb {facts['chromadb']}. {n:,} chunks in four audiences; one requester sees "
        "only `public`, another every audience but `hr` (3 of 4). Milliseconds per query "
        "over the dev questions (3 runs each), embedding excluded; the unfiltered hybrid "
        "search is an admin's, who sees everything.",
        "",
        "| mix | unfiltered dense | dense, sees public | dense, sees 3 of 4 "
        "| unfiltered hybrid | hybrid, sees public | hybrid, sees 3 of 4 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    ratios = []
    for name, t in results.items():
        cells = [f"{pct(t[k], 50):.1f} / {pct(t[k], 95):.1f}" for k in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for who in REQUESTERS:
            ratios.append(
                (
                    pct(t[f"dense {who}"], 95) / pct(t["unfiltered"], 95),
                    pct(t[f"hybrid {who}"], 95) / pct(t["hybrid all"], 95),
                )
            )
    worst_dense = max(r[0] for r in ratios)
    worst_hybrid = max(r[1] for r in ratios)
    lines += [
        "",
        "Cells are p50 / p95. Each audience is a collection; a requester's dense search "
        "queries their audiences' collections (in parallel when there are several) and "
        "merges them by similarity. Worst p95 ratio to the unfiltered figure over both "
        f"mixes and requesters: dense {worst_dense:.2f}×, hybrid {worst_hybrid:.2f}×. "
        "No hidden chunk was ever returned, and every requester got the full top 15 "
        "(asserted per query).",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--index", type=Path, required=True, help="a synced kbot data dir")
    parser.add_argument("--questions", type=Path, default=SHARED / "eval" / "dev_questions.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started = datetime.now(UTC)
    chunks, vectors = source_chunks(args.index)
    qs = [q.question for q in load_questions(args.questions)]
    embedder = get_embedder()
    questions = dict(zip(qs, embedder.embed(qs), strict=True))
    results = {}
    for name in MIXES:
        with tempfile.TemporaryDirectory() as tmp:
            results[name] = run_mix(name, Path(tmp), chunks, vectors, args.chunks, questions)
    section = report(results, args.chunks, started)
    print(section)
    write_region(args.out, START, END, section)


if __name__ == "__main__":
    main()
