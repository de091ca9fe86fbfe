"""The one answering service every chat adapter calls: retrieve, judge the evidence, answer, log.

It never imports Slack or Teams code. Adapters turn a platform event into ``ask()`` and
render the returned ``Answer``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.extractive import idf_from, select_passage, tidy_headings
from bot.retrieval import PUBLIC, Retriever, visible_to
from config.models import AnsweringConfig
from db import Database
from db.models import QueryRecord, utcnow
from indexer.chunking import Chunk
from indexer.store import ScoredChunk, StoreError

log = logging.getLogger(__name__)

ABSTAIN_TEXT = (
    "I couldn't find a confident answer to this in the knowledge base. "
    "The closest sources I found are below; they may not answer your question."
)
# Passage budgets in characters: the best source is quoted at length, the others briefly.
FIRST_SOURCE_CHARS = 1000
OTHER_SOURCE_CHARS = 300
# Other documents are cited only when they score close to the best one.
SOURCE_MARGIN = 0.08
# Further chunks of the best document are quoted from when they score this close to it.
DOC_CHUNK_MARGIN = 0.25
MAX_DOC_CHUNKS = 3


class QuestionError(ValueError):
    """The question cannot be answered as asked (empty, too long)."""


@dataclass(frozen=True)
class Requester:
    """Who asked, and where. ``audiences`` are the audiences the place of the question
    belongs to (``public`` is always added): documents of any other audience are never
    retrieved for it."""

    platform: str = "cli"
    channel: str | None = None
    user: str | None = None
    audiences: frozenset[str] = frozenset({PUBLIC})


@dataclass(frozen=True)
class Citation:
    n: int
    title: str
    url: str
    connector: str
    path: str  # the document id, relative to its connector's root
    heading: str = ""
    chunk_id: str = ""


@dataclass
class Answer:
    query_id: str
    question: str
    text: str  # Markdown, with [n] markers that refer to ``citations``
    abstained: bool
    citations: list[Citation]
    mode: str = "extractive"  # how the text was produced: extractive | generated
    latency_ms: dict[str, float] = field(default_factory=dict)
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    # The chunks given to the answerer, in the order it was given them.
    context: list[Chunk] = field(default_factory=list)
    error: str | None = None  # a dependency that failed, said plainly

    def as_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "answer": self.text,
            "abstained": self.abstained,
            "mode": self.mode,
            "citations": [
                {k: v for k, v in asdict(c).items() if k not in ("chunk_id", "heading")}
                for c in self.citations
            ],
            "latency_ms": self.latency_ms,
            "error": self.error,
        }


class AnsweringService:
    """Answers questions from the index and records every one in the query log."""

    def __init__(self, config: AnsweringConfig, retriever: Retriever, db: Database):
        self.config = config
        self.retriever = retriever
        self.db = db

    def validate(self, question: str) -> str:
        q = " ".join((question or "").split())
        if not q:
            raise QuestionError(
                "The question is empty. Ask something, e.g. 'How do I rotate the API key?'"
            )
        if len(q) > self.config.max_question_chars:
            raise QuestionError(
                f"The question is {len(q)} characters long; the limit is "
                f"{self.config.max_question_chars}. Ask about one thing at a time."
            )
        return q

    def ask(self, question: str, requester: Requester | None = None) -> Answer:
        """Answer one question.

        Raises QuestionError for unusable input, never for a failing index: that becomes an
        answer that says so, and is logged like any other.
        """
        q = self.validate(question)
        requester = requester or Requester()
        t0 = time.perf_counter()
        error = None
        try:
            hits = self.retrieve(q, visible_to(requester.audiences))
        except StoreError as e:
            log.error("retrieval failed: %s", e)
            hits, error = [], "The knowledge index is unavailable right now, so I can't search it."
        t1 = time.perf_counter()
        answer = self.compose(q, hits)
        answer.error = error
        if error:
            answer.text = f"{error} Please try again in a few minutes."
        t2 = time.perf_counter()
        answer.latency_ms = {
            "retrieve": round((t1 - t0) * 1000, 1),
            "answer": round((t2 - t1) * 1000, 1),
            "total": round((t2 - t0) * 1000, 1),
        }
        self._log(answer, requester)
        return answer

    def retrieve(
        self, question: str, audiences: frozenset[str] = frozenset({PUBLIC})
    ) -> list[ScoredChunk]:
        return self.retriever.search(question, self.config.top_k, audiences)

    def compose(self, question: str, hits: list[ScoredChunk]) -> Answer:
        """Decide whether the evidence is strong enough, and build the answer text."""
        qid = uuid.uuid4().hex
        retrieved = [
            {
                "chunk_id": h.chunk.id,
                "connector": h.chunk.connector,
                "path": h.chunk.doc_id,
                "score": round(h.score, 4),
                "dense": round(h.dense, 4),
                "lexical": round(h.lexical, 4),
            }
            for h in hits
        ]
        context = [h.chunk for h in hits]
        best_per_doc: dict[tuple[str, str], ScoredChunk] = {}
        for h in hits:
            best_per_doc.setdefault((h.chunk.connector, h.chunk.doc_id), h)
        ranked = list(best_per_doc.values())  # hits are best first, so this is too

        # Confidence: how close the best retrieved passage is in meaning. Keyword overlap
        # alone is not evidence (a question can share words with an unrelated runbook).
        confidence = max((h.dense for h in hits), default=0.0)
        if not ranked or confidence < self.config.min_score:
            cites = [_citation(i, h) for i, h in enumerate(ranked[: self.config.max_sources], 1)]
            return Answer(
                qid, question, ABSTAIN_TEXT, True, cites, retrieved=retrieved, context=context
            )

        top = ranked[0].dense
        chosen = [ranked[0]] + [h for h in ranked[1:] if h.dense >= top - SOURCE_MARGIN]
        chosen = chosen[: self.config.max_sources]
        idf = idf_from([h.chunk.text for h in hits])
        parts = []
        used: list[Chunk] = []
        for i, h in enumerate(chosen, 1):
            if i == 1:
                # The best document often spreads its answer over consecutive chunks
                # (diagnosis, then mitigation): quote from all of its strong chunks.
                own = _doc_chunks(hits, h, top - DOC_CHUNK_MARGIN)
                text = "\n\n".join(c.text for c in own)
                label = h.chunk.heading if len(own) == 1 else h.chunk.title
                passage = select_passage(text, question, FIRST_SOURCE_CHARS, idf)
                paths = {p for c in own for p in c.heading_path}
                lead = "From"
                used += own
            else:
                label = h.chunk.heading
                passage = select_passage(h.chunk.text, question, OTHER_SOURCE_CHARS, idf)
                paths = set(h.chunk.heading_path)
                lead = "Also see"
                used.append(h.chunk)
            parts.append(f"{lead} **{label}** [{i}]:\n\n{tidy_headings(passage, paths)}")
        cites = [_citation(i, h) for i, h in enumerate(chosen, 1)]
        # What the answer was built from comes first, then the rest of what was retrieved.
        context = used + [c for c in context if c not in used]
        return Answer(
            qid, question, "\n\n".join(parts), False, cites, retrieved=retrieved, context=context
        )

    def _log(self, answer: Answer, requester: Requester) -> None:
        record = QueryRecord(
            id=answer.query_id,
            created_at=utcnow(),
            platform=requester.platform,
            channel=requester.channel,
            user_id=requester.user,
            question=answer.question,
            answer=answer.text,
            abstained=answer.abstained,
            citations=[asdict(c) for c in answer.citations],
            retrieved=answer.retrieved,
            latency_ms=answer.latency_ms,
        )
        with self.db.session() as s:
            s.add(record)


def _doc_chunks(hits: list[ScoredChunk], best: ScoredChunk, floor: float) -> list[Chunk]:
    """The best document's strongest retrieved chunks, in document order."""
    same = [
        h
        for h in hits
        if (h.chunk.connector, h.chunk.doc_id) == (best.chunk.connector, best.chunk.doc_id)
        and h.dense >= floor
    ][:MAX_DOC_CHUNKS]
    return sorted((h.chunk for h in same), key=lambda c: c.index)


def _citation(n: int, h: ScoredChunk) -> Citation:
    c = h.chunk
    return Citation(
        n=n,
        title=c.title,
        url=c.url,
        connector=c.connector,
        path=c.doc_id,
        heading=c.heading,
        chunk_id=c.id,
    )
