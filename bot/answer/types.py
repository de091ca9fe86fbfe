"""The answering core's types, defined once and shared: who asked (``Requester``), what
the answer is (``Answer`` with its ``Citation``s and model ``Usage``), and why a question
was refused (``QuestionError``).

They live apart from the service so that adapters, reports and observers can name an
answer without importing the machinery that makes one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any

from indexer.chunking import Chunk

# The audience every requester may read.
PUBLIC = "public"


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
    # The conversation the question was asked in, as its platform names it (a Slack
    # thread, a Teams reply chain or 1:1 chat, a web chat conversation): the earlier
    # questions answered in it are the question's context. None: a question on its own.
    thread: str | None = None
    # Where a reviewer's correction can be posted back later (a Teams conversation
    # reference, kept in the query log); None where the thread alone says it, or nowhere.
    reply_to: dict[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class Citation:
    n: int
    title: str
    url: str
    connector: str
    path: str  # the document id, relative to its connector's root
    heading: str = ""
    chunk_id: str = ""
    updated: str = ""  # the document's last-modified date, ISO 8601
    stale: str = ""  # "last updated 14 months ago" when older than answering.stale_after

    @classmethod
    def of(cls, chunk: Chunk, n: int) -> Citation:
        """Citation ``n``, to the document ``chunk`` came from."""
        return cls(
            n=n,
            title=chunk.title,
            url=chunk.url,
            connector=chunk.connector,
            path=chunk.doc_id,
            heading=chunk.heading,
            chunk_id=chunk.id,
            updated=chunk.last_modified.date().isoformat(),
        )

    def aged(self, today: date, stale_after_days: int) -> Citation:
        """This citation, with ``stale`` saying how old its document is when it was last
        updated more than ``stale_after_days`` before ``today`` (0: never)."""
        if not stale_after_days or not self.updated:
            return self
        days = (today - date.fromisoformat(self.updated)).days
        if days <= stale_after_days:
            return self
        months = round(days / 30.44)
        age = (
            f"{months} month{'s' if months != 1 else ''}"
            if months < 24
            else f"{round(days / 365.25)} years"
        )
        return replace(self, stale=f"last updated {age} ago")


@dataclass(frozen=True)
class Usage:
    """What one model call consumed; ``cost_usd`` is None when the model has no known price."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cost_usd: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


def add_usage(a: Usage | None, b: Usage) -> Usage:
    """Two model calls' usage as one (a follow-up's condensing and its answer): tokens add
    up, and the cost is unknown when either call's is."""
    if a is None:
        return b
    cost = None if a.cost_usd is None or b.cost_usd is None else a.cost_usd + b.cost_usd
    return Usage(
        a.model,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cached_tokens + b.cached_tokens,
        cost,
    )


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
    # With an ``llm:``: the model consulted, why its answer was not shown (a short code),
    # what its call consumed (None when no call was made), and the prompt sent.
    model: str | None = None
    fallback_reason: str | None = None
    usage: Usage | None = None
    prompt: str | None = None
    cache_hit: bool = False
    # Why each cited source was quoted as it was: [{"n", "blocks": Choice.explain()}].
    passages: list[dict[str, Any]] = field(default_factory=list)
    # A follow-up: the earlier query of its thread it follows, the stand-alone question
    # searched for it (condensed by the model, or the follow-up with the thread's earlier
    # question), and why a model's condensed question was not used (a short code).
    follows: str | None = None
    standalone_question: str | None = None
    condense_fallback: str | None = None
    # How close the best passage was in meaning (None: nothing was retrieved), and what
    # askers' votes and leads' curations did to the ranking: [{"kind", ...}].
    confidence: float | None = None
    adjustments: list[dict[str, Any]] = field(default_factory=list)

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
            "generated": self.mode == "generated",
            "fallback_reason": self.fallback_reason,
            "usage": self.usage.as_json() if self.usage else None,
            "follows": self.follows,
        }
