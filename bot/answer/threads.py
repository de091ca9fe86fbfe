"""Follow-up questions: a thread's history, read back from the query log, and how a
follow-up is searched in its context.

A thread is a conversation as its platform names it (a Slack thread, a Teams reply chain
or 1:1 chat, a web chat conversation). Every answered question is logged with its thread's
key, so the query log is the history: it survives a restart, and a thread whose queries
are gone (deleted, or older than a restored backup) has none, so its next question is
answered as a new one.

The history is bounded: the last ``HISTORY_TURNS`` turns, at most ``HISTORY_CHARS``
characters of their questions and answers. A 50-turn thread is read with one indexed
query of ``HISTORY_TURNS`` rows, so its follow-ups cost what a third-turn one does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from db import Database
from db.models import QueryRecord
from indexer.store import ScoredChunk

# The earlier turns a follow-up is answered with: the last six, and of those only as
# many as fit in 2,000 characters of questions and answers (newest first; the newest
# one always, cut to fit).
HISTORY_TURNS = 6
HISTORY_CHARS = 2000
# Each earlier answer counts this much at most: one long quoted runbook must not push
# the thread's questions out of the history.
TURN_ANSWER_CHARS = 600
# The search query of an extractive follow-up: the follow-up, then the thread's last
# stand-alone question (which carries its own earlier context), cut to this length. The
# embedding model reads 256 word pieces, about this many characters.
QUERY_CHARS = 600
# The thread's context is used when it brings the best passage found at least this much
# closer in meaning than the follow-up finds alone; otherwise the follow-up is a complete
# question (a new topic in an old thread) and is answered as one. Measured on
# bench/eval/followups.jsonl by bench/followups.py (docs/BENCHMARKS.md).
CONTEXT_GAIN = 0.0
# A cited document is moved first only when its best passage is this close to the best
# passage found: a follow-up that has moved on is not pulled back to the old runbook.
PREFER_MARGIN = 0.15
# Thread keys longer than the column are stored as a digest.
MAX_KEY_CHARS = 255

Doc = tuple[str, str]  # (connector, document id)


@dataclass(frozen=True)
class Turn:
    """One earlier question of a thread and what kbot answered."""

    query_id: str
    question: str
    answer: str  # cut to TURN_ANSWER_CHARS
    abstained: bool
    cited: tuple[Doc, ...]  # the documents cited, in citation order
    standalone: str  # what was searched for it: its stand-alone question, or itself


@dataclass(frozen=True)
class History:
    """A thread's earlier turns, oldest first, bounded by HISTORY_TURNS and HISTORY_CHARS."""

    key: str | None = None
    turns: tuple[Turn, ...] = ()

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def cited(self) -> list[Doc]:
        """The documents the thread's answers cited, the latest answer's first. An
        abstention's "closest sources" were never offered as support, so they are not."""
        docs: dict[Doc, None] = {}
        for turn in reversed(self.turns):
            if not turn.abstained:
                docs.update(dict.fromkeys(turn.cited))
        return list(docs)

    def chars(self) -> int:
        return sum(len(t.question) + len(t.answer) for t in self.turns)


def thread_key(platform: str, thread: str) -> str:
    """The query log's key for a platform's thread id (a digest when it is too long)."""
    key = f"{platform}:{thread}"
    if len(key) <= MAX_KEY_CHARS:
        return key
    return f"{platform}:sha256:{hashlib.sha256(thread.encode()).hexdigest()}"


def load(db: Database, key: str) -> History:
    """The bounded history of thread ``key`` (empty when the thread is unknown)."""
    with db.session() as s:
        rows = s.execute(
            select(
                QueryRecord.id,
                QueryRecord.question,
                QueryRecord.answer,
                QueryRecord.abstained,
                QueryRecord.citations,
                QueryRecord.standalone_question,
            )
            .where(QueryRecord.thread_key == key)
            .order_by(QueryRecord.created_at.desc(), QueryRecord.id.desc())
            .limit(HISTORY_TURNS)
        ).all()
    turns: list[Turn] = []
    left = HISTORY_CHARS
    for qid, question, answer, abstained, citations, standalone in rows:  # newest first
        answer = _cut(answer, TURN_ANSWER_CHARS)
        size = len(question) + len(answer)
        if turns and size > left:
            break
        if not turns and size > left:  # the newest turn is always kept, cut to fit
            question = _cut(question, left // 2)
            answer = _cut(answer, left - len(question))
            size = len(question) + len(answer)
        left -= size
        cited = tuple((c.get("connector", ""), c.get("path", "")) for c in citations or [])
        turns.append(Turn(qid, question, answer, abstained, cited, standalone or question))
    return History(key, tuple(reversed(turns)))


def known(db: Database, key: str) -> bool:
    """Whether kbot has answered in thread ``key`` (the query log has a question of it)."""
    with db.session() as s:
        return (
            s.scalar(select(QueryRecord.id).where(QueryRecord.thread_key == key).limit(1))
            is not None
        )


def combined_query(question: str, history: History) -> str:
    """The extractive search query of a follow-up: itself, then its thread's last
    stand-alone question, cut to QUERY_CHARS. "And what if that doesn't work?" then
    finds the runbook the thread is about."""
    last = history.last
    if last is None:
        return question
    return _cut(f"{question} {last.standalone}", QUERY_CHARS)


Search = Callable[[str], list[ScoredChunk]]


def follow_up_hits(
    question: str, history: History, search: Search, standalone: str | None = None
) -> tuple[list[ScoredChunk], str]:
    """What a follow-up is answered from, and the stand-alone question it was searched as.

    ``standalone`` is a question already made stand-alone (a model's condensed one): it is
    searched alone. Otherwise the rule, measured on the follow-up eval set, is:

    1. Search the follow-up alone, and the follow-up with the thread's last stand-alone
       question (``combined_query``).
    2. If the combined search's best passage is not closer in meaning than the follow-up's
       own best by more than CONTEXT_GAIN, the earlier question added nothing: the
       follow-up is a complete question on a topic of its own ("unrelated: until when
       may we deploy on Fridays?") and is answered from its own search, as a new one.
    3. Otherwise it is answered from the combined search, with the documents the thread
       already cited moved first when they are close to the best passage (``prefer``): a
       follow-up is most often about the answer it follows.
    """
    if standalone is not None:
        return prefer(search(standalone), history.cited()), standalone
    alone = search(question)
    query = combined_query(question, history)
    combined = search(query)
    if _best(combined) <= _best(alone) + CONTEXT_GAIN:
        return alone, question
    return prefer(combined, history.cited()), query


def _best(hits: list[ScoredChunk]) -> float:
    return max((h.dense for h in hits), default=0.0)


def prefer(hits: list[ScoredChunk], docs: list[Doc]) -> list[ScoredChunk]:
    """``hits`` with the chunks of ``docs`` moved first (a stable partition: each group
    keeps its ranking), those of a document whose best chunk is within PREFER_MARGIN of
    the best chunk's similarity. Only what the search found is reordered, so nothing the
    requester may not see, and nothing unrelated to the question, is added."""
    top = _best(hits)
    best: dict[Doc, float] = {}
    for h in hits:
        doc = (h.chunk.connector, h.chunk.doc_id)
        best[doc] = max(best.get(doc, 0.0), h.dense)
    wanted = {d for d in docs if best.get(d, -1.0) >= top - PREFER_MARGIN}
    first = [h for h in hits if (h.chunk.connector, h.chunk.doc_id) in wanted]
    return first + [h for h in hits if (h.chunk.connector, h.chunk.doc_id) not in wanted]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"
