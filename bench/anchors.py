"""Issue 3's retrieval anchors: the LangChain tutorial recipe, BM25, and their RRF.

On the real corpus (``../shared/corpus``) and the dev questions, in a temporary folder:

- **LangChain recipe**: ``RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)``
  over each document's raw file text, all-MiniLM-L6-v2 embeddings, a Chroma collection in
  cosine space, top-k by similarity;
- **BM25**: bm25s over the same chunks (``bm25s.tokenize`` with English stopwords);
- **RRF of both**: reciprocal-rank fusion (k=60) of the two rankings.

Each is scored with ``bot.review.evaluation``'s own definitions, so the figures compare directly
with ``kbot eval``: hit@5, recall@5 and mrr@10 over distinct documents, context_keywords@3
and context_chars@3 over the first 3 chunks. Prints a Markdown table.
Usage: ``.venv/bin/python bench/anchors.py [--corpus DIR] [--questions FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bot.review.evaluation import Outcome, Question, keywords_in, load_questions, summarize
from connectors.parsing import SUFFIX_FORMATS
from indexer.embeddings import get_embedder

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CHUNK_SIZE, CHUNK_OVERLAP = 1000, 200
# Chunks each retriever returns: enough to hold 10 distinct documents for mrr@10.
CANDIDATES = 50
RRF_K = 60
CONTEXT_CHUNKS = 3
EMBED_BATCH = 64
COLUMNS = ("hit@5", "recall@5", "mrr@10", "context_keywords@3", "context_chars@3")

# A ranking is chunk indices, best first, with their scores.
Ranking = list[tuple[int, float]]


def log(msg: str) -> None:
    print(f"[anchors {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_chunks(corpus: Path) -> tuple[list[str], list[str]]:
    """Every supported file split as the tutorial does: (document path per chunk, chunk text)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)
    paths: list[str] = []
    texts: list[str] = []
    files = sorted(
        p for p in corpus.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIX_FORMATS
    )
    for file in files:
        # The document id kbot uses and the dev set's `relevant` form.
        rel = file.relative_to(corpus).as_posix()
        for text in splitter.split_text(file.read_text(encoding="utf-8", errors="replace")):
            paths.append(rel)
            texts.append(text)
    log(f"{len(files)} documents, {len(texts)} chunks")
    return paths, texts


def dense_retriever(texts: list[str], folder: Path) -> Callable[[str], Ranking]:
    """Embed every chunk into a fresh Chroma collection; return a top-k search."""
    import chromadb
    from chromadb.config import Settings

    embedder = get_embedder()
    client = chromadb.PersistentClient(
        path=str(folder), settings=Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection(
        "anchors", embedding_function=None, metadata={"hnsw:space": "cosine"}
    )
    step = max(EMBED_BATCH, min(client.get_max_batch_size(), 1024))
    started = time.perf_counter()
    for start in range(0, len(texts), step):
        batch = texts[start : start + step]
        vectors = embedder.embed(batch, batch_size=EMBED_BATCH)
        collection.add(
            ids=[str(i) for i in range(start, start + len(batch))], embeddings=vectors.tolist()
        )
        done = start + len(batch)
        log(f"embedded {done}/{len(texts)} chunks ({time.perf_counter() - started:.0f} s)")

    def search(question: str) -> Ranking:
        vector = embedder.embed([question])[0]
        found = collection.query(
            query_embeddings=[vector.tolist()], n_results=CANDIDATES, include=["distances"]
        )
        distances = found["distances"]
        assert distances is not None  # requested in `include`
        # Chroma's cosine distance is 1 - similarity.
        return [
            (int(i), 1.0 - float(d)) for i, d in zip(found["ids"][0], distances[0], strict=True)
        ]

    return search


def lexical_retriever(texts: list[str]) -> Callable[[str], Ranking]:
    """bm25s's standard recipe over the chunks; return a top-k search."""
    import bm25s

    model = bm25s.BM25()
    model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(question: str) -> Ranking:
        # Strings, not ids: bm25s maps them onto the index's vocabulary and drops unknown ones.
        tokens = bm25s.tokenize(question, stopwords="en", return_ids=False, show_progress=False)
        docs, scores = model.retrieve(tokens, k=CANDIDATES, show_progress=False, n_threads=1)
        return [
            (int(i), float(s))
            for i, s in zip(np.asarray(docs[0]), np.asarray(scores[0]), strict=True)
            if s > 0
        ]

    return search


def rrf(*rankings: Ranking) -> Ranking:
    """Reciprocal-rank fusion: each chunk scores the sum of 1 / (k + rank) over the rankings."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk, _) in enumerate(ranking, 1):
            fused[chunk] = fused.get(chunk, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def judge(question: Question, ranking: Ranking, paths: list[str], texts: list[str]) -> Outcome:
    """The outcome ``kbot eval`` would record if these chunks were the answerer's context."""
    docs: dict[str, tuple[str, str, float]] = {}
    for chunk, score in ranking:
        docs.setdefault(paths[chunk], (paths[chunk], "corpus", score))
    context = [texts[chunk] for chunk, _ in ranking[:CONTEXT_CHUNKS]]
    return Outcome(
        question=question,
        docs=tuple(docs.values()),
        context_keyword_hits=tuple(keywords_in(question.answer_keywords, "\n".join(context))),
        context_chars=sum(len(t) for t in context),
        # Retrieval only: there is no answer to judge, and those measures are not reported.
        answer_keyword_hits=(),
        answer_chars=0,
        cited=(),
        abstained=False,
        latency_ms=0.0,
    )


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, measures in results.items():
        cells = [
            f"{measures[c]:.0f}" if c == "context_chars@3" else f"{measures[c]:.3f}"
            for c in COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    parser.add_argument("--questions", type=Path, default=SHARED / "eval" / "dev_questions.jsonl")
    args = parser.parse_args()

    questions = load_questions(args.questions)
    paths, texts = load_chunks(args.corpus)
    with tempfile.TemporaryDirectory(prefix="kbot-anchors-") as tmp:
        dense = dense_retriever(texts, Path(tmp) / "chroma")
        lexical = lexical_retriever(texts)
        outcomes: dict[str, list[Outcome]] = {"BM25": [], "LangChain recipe": [], "RRF of both": []}
        for q in questions:
            d, b = dense(q.question), lexical(q.question)
            for name, ranking in (("BM25", b), ("LangChain recipe", d), ("RRF of both", rrf(d, b))):
                outcomes[name].append(judge(q, ranking, paths, texts))
    results = {name: summarize(o) for name, o in outcomes.items()}
    answerable = sum(q.answerable for q in questions)
    print(
        f"{len(questions)} questions ({answerable} answerable) from {args.questions}; "
        f"corpus {args.corpus}\n"
    )
    print(table(results))
    print(f"\n{len(texts)} chunks averaging {sum(map(len, texts)) / len(texts):.0f} characters.")


if __name__ == "__main__":
    main()
