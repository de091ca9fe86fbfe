"""SQL tables: sync runs and document state (indexer), the query log and feedback (bot).

The schema is created and changed only through the Alembic migrations in ``db/migrations``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SyncRun(Base):
    """One sync of one connector: what it changed, or why it failed."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|ok|failed
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    added: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # How documents were chunked and embedded; a run with another signature re-reads all.
    signature: Mapped[str | None] = mapped_column(String(255), nullable=True)


class IndexedDocument(Base):
    """What the index holds for one document, so a sync can tell what changed."""

    __tablename__ = "documents"

    connector: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc_id: Mapped[str] = mapped_column(String(1024), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(64))
    last_modified: Mapped[datetime] = mapped_column(UTCDateTime)
    chunk_count: Mapped[int] = mapped_column(Integer)
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QueryRecord(Base):
    """One question and the answer given, with everything needed to debug it."""

    __tablename__ = "queries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    platform: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    abstained: Mapped[bool] = mapped_column(Boolean)
    # [{"n", "title", "url", "connector", "path", "chunk_id"}]
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # [{"chunk_id", "connector", "path", "score"}], best first
    retrieved: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # {"retrieve": ms, "answer": ms, "total": ms}
    latency_ms: Mapped[dict[str, float]] = mapped_column(JSON)
    # How the answer was made: extractive | generated (None on rows older than migration 0004).
    mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # With an ``llm:``: the model consulted, what its call used and cost (None when no call
    # was made, e.g. a cache hit), why its answer was not shown, and the prompt sent.
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    fallback_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Why each cited source was quoted as it was (extractive answers; None before 0006):
    # [{"n", "blocks": [{"block", "score", "shares": {feature: share}, "inherited"}]}]
    passages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Follow-ups (None before 0007, and for a question on its own): the conversation the
    # question was asked in (a Slack thread, a Teams reply chain, a web chat conversation),
    # the thread's earlier query this one follows, what was searched for it in its
    # conversation's context, and why a model's condensed question was not used.
    thread_key: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    # Not a foreign key: the earlier query may be deleted (or lost in a restore) and its
    # follow-ups must stay; the trace says when it is gone.
    follows: Mapped[str | None] = mapped_column(String(32), nullable=True)
    standalone_question: Mapped[str | None] = mapped_column(Text, nullable=True)
    condense_fallback: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Feedback ranking (None before 0009): the requester's audiences, sorted and
    # comma-joined (votes count only for requesters with the same ones), the question's
    # embedding as float32 bytes (close questions share votes and curations), and how
    # close the best passage was in meaning (the review queue takes the lowest).
    audiences: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    question_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What votes and curations did to the ranking, for the trace:
    # [{"kind": "votes"|"pin"|"suppress", "connector", "path", ...}]
    adjustments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Where a reviewer's correction can be posted back (None before 0010, and where there
    # is nowhere to post): a Teams question's conversation reference, as botbuilder
    # serializes it. A Slack question's thread is its channel and thread_key.
    reply_to: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Feedback(Base):
    """A 👍/👎 on an answer; one per (query, user): clicking again changes the vote."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("query_id", "user_id", name="uq_feedback_query_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    query_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("queries.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(255), default="")
    vote: Mapped[str] = mapped_column(String(8))  # up|down
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Curation(Base):
    """A lead's pin ("best bet") or suppression of one document for a question and its
    close paraphrases. Removing it keeps the row (who and when), so the list shows history."""

    __tablename__ = "curations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))  # pin|suppress
    question: Mapped[str] = mapped_column(Text)
    question_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    connector: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The logged question it was made from (a review, a report row), if any.
    query_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    removed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class Review(Base):
    """A reviewer's decision on a queued answer; a reviewed answer leaves the queue."""

    __tablename__ = "reviews"

    query_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("queries.id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[str] = mapped_column(String(16))  # right|pinned|gap|dismissed|corrected
    why: Mapped[str] = mapped_column(String(16))  # low_confidence|abstained|downvoted
    reviewer: Mapped[str] = mapped_column(String(255))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # "pinned": the document the reviewer picked, and the pin made for it.
    connector: Mapped[str | None] = mapped_column(String(64), nullable=True)
    path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    curation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # "corrected": the corrected answer the reviewer posted into the original conversation.
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class PlatformEvent(Base):
    """A chat platform event already handled, so the platform's retries of it are dropped."""

    __tablename__ = "platform_events"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The platform's id for what was asked, e.g. Slack's "<team>:<channel>:<message ts>".
    event_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AnswerMessage(Base):
    """The chat message an answer was posted as. Teams reports a vote from its feedback
    loop with the voted message's id only; this finds the answer it belongs to, also after
    a restart."""

    __tablename__ = "answer_messages"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    query_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("queries.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerJob(Base):
    """``kbot worker``'s APScheduler job store (``SQLAlchemyJobStore``'s own table layout),
    so the schedule survives restarts and lives with the other state, not on a disk."""

    __tablename__ = "kbot_scheduler_jobs"

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True, nullable=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
