"""The one answering service every chat adapter calls: retrieve, judge the evidence, answer, log.

It never imports Slack or Teams code. Adapters turn a platform event into ``ask()`` and
render the returned ``Answer``, or into ``stream()`` and render the model's text as it
comes, then the ``Answer``.
"""

from __future__ import annotations

import calendar
import contextvars
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from bot.answer import answer_type, events, procedures, threads
from bot.answer.curation import to_bytes
from bot.answer.limits import RateLimiter
from bot.answer.passages import (
    blocks,
    choose,
    idf_from,
    lead,
    select_from_sections,
    tidy_headings,
    without,
)
from bot.answer.request_ids import new_query_id
from bot.answer.retrieval import Retriever, names_document, squash, visible_to
from bot.answer.streaming import Delta, Final
from bot.answer.types import PUBLIC, Answer, Citation, QuestionError, Requester, add_usage
from bot.answer.votes import audience_key
from config.models import AnsweringConfig
from db import Database
from db.models import IndexedDocument, QueryRecord, utcnow
from indexer.chunking import Chunk, chunk_id, join_chunks
from indexer.chunking import sections as sections_of
from indexer.embeddings import common_words
from indexer.lexical import MIN_WORD
from indexer.store import ScoredChunk, StoreError
from indexer.text import STOP, identifiers, search_terms, stem

if TYPE_CHECKING:
    from bot.answer.generation import Generator

log = logging.getLogger(__name__)

ABSTAIN_TEXT = (
    "I couldn't find a confident answer to this in the knowledge base. "
    "The closest sources I found are below; they may not answer your question."
)
# Passage budgets in characters: the best source is quoted at length, the others briefly.
FIRST_SOURCE_CHARS = 1000
OTHER_SOURCE_CHARS = 300
# After a quoted procedure, the other sources are leads: quoted this briefly.
PROCEDURE_OTHER_CHARS = 150
# Other documents are cited only when they score close to the best one.
SOURCE_MARGIN = 0.08
# How far below answering.min_score a question still counts as confident when the best
# document's title holds every one of its content words.
TITLE_MARGIN = 0.1
# Up to how far above ``min_score`` a question with a word no document uses is taken to be
# about something the knowledge base does not cover (docs/EVALUATION.md, "Words the
# knowledge base never uses").
WORD_MARGIN = 0.15
# The context passages an answerer reads (an LLM is paid per character of it): the best
# document's, then the others'.
CONTEXT_PASSAGES = 3
CONTEXT_FIRST_CHARS = 2200
CONTEXT_OTHER_CHARS = 700


class AnsweringService:
    """Answers questions from the index and records every one in the query log."""

    def __init__(
        self,
        config: AnsweringConfig,
        retriever: Retriever,
        db: Database,
        generator: Generator | None = None,
        limiter: RateLimiter | None = None,
    ):
        self.config = config
        self.limiter = limiter
        self.retriever = retriever
        self.db = db
        # Without one, answers are extractive; with one, the extractive answer is what the
        # bot falls back to whenever the model's answer cannot be shown.
        self.generator = generator

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
        answer that says so, and is logged like any other. Observers subscribed to
        ``bot.answer.events`` (metrics, logs, spans) watch every call.
        """
        event = events.Asked(self, question, requester)
        return events.observed(event, lambda: self._ask(question, requester))

    def stream(self, question: str, requester: Requester | None = None) -> Iterator[Delta | Final]:
        """Answer one question as ``ask()`` does, streaming the model's text: ``Delta``s as it
        comes, then one ``Final`` with the answer as logged (validated on the complete
        text; ``replaced`` when what was streamed must give way to the extractive
        fallback). Without a model, or for an abstention or a failed search, only the
        ``Final``. Raises QuestionError (before anything is yielded) as ``ask()`` does.

        The answer is made on a worker thread inside the observers of
        ``bot.answer.events`` (in the caller's context, so spans nest as for ``ask()``);
        the deltas are handed over as they come.
        """
        if self.generator is None:
            yield Final(self.ask(question, requester), replaced=False)
            return
        generator = self.generator
        handed: queue.SimpleQueue[Delta | Final | BaseException] = queue.SimpleQueue()
        ended: list[Final] = []

        def generate(searched: str, extractive: Answer, audiences: frozenset[str]) -> Answer:
            for item in generator.stream(searched, extractive, audiences):
                if isinstance(item, Final):
                    ended.append(item)
                    return item.answer
                handed.put(item)
            raise AssertionError("a stream ends with its Final")

        def run() -> None:
            try:
                event = events.Asked(self, question, requester)
                answer = events.observed(event, lambda: self._ask(question, requester, generate))
                handed.put(Final(answer, replaced=bool(ended) and ended[0].replaced))
            except BaseException as e:  # handed to the caller, raised there
                handed.put(e)

        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(run,), name="kbot-stream", daemon=True).start()
        while True:
            item = handed.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Final):
                return

    def _ask(
        self,
        question: str,
        requester: Requester | None,
        generate: Callable[[str, Answer, frozenset[str]], Answer] | None = None,
    ) -> Answer:
        q = self.validate(question)
        requester = requester or Requester()
        if self.limiter is not None:
            self.limiter.check(requester)  # raises RateLimited, a QuestionError
        t0 = time.perf_counter()
        history = self.history(requester)
        th = time.perf_counter()
        # With a model, a follow-up is first condensed into a stand-alone question; if that
        # fails it is searched the extractive way, with the thread's earlier question.
        condensed = None
        if history.turns and self.generator is not None:
            condensed = self.generator.condense(q, history.turns)
        standalone = condensed.question if condensed is not None else None
        tc = time.perf_counter()
        error = None
        searched = q
        audiences = visible_to(requester.audiences)
        # What votes and curations did to each search's ranking, by the text searched.
        notes: dict[str, list[dict[str, Any]]] = {}

        def search(text: str) -> list[ScoredChunk]:
            return self.retrieve(text, audiences, notes.setdefault(text, []))

        try:
            if history.turns:
                hits, searched = threads.follow_up_hits(q, history, search, standalone)
            else:
                hits = search(q)
        except StoreError as e:
            log.error("retrieval failed: %s", e)
            hits, error = [], "The knowledge index is unavailable right now, so I can't search it."
        t1 = time.perf_counter()
        adjustments = notes.get(searched, [])
        # A lead's pin says this document answers the question: it is answered from it.
        pinned = any(n["kind"] == "pin" and n["applied"] for n in adjustments)
        # Passages are chosen for the question as asked: "and what if that doesn't work?"
        # is answered from the runbook's fallback section, not the one the thread's first
        # question was answered from (measured: bench/followups.py). A model's condensed
        # question says the same with its context resolved.
        answer = self.compose(standalone or q, hits, pinned=pinned, audiences=audiences)
        answer.adjustments = adjustments
        # How close the best passage was in meaning: the review queue takes the lowest.
        answer.confidence = round(max(h.dense for h in hits), 4) if hits else None
        answer.error = error
        if error:
            answer.text = f"{error} Please try again in a few minutes."
        t2 = time.perf_counter()
        answer.latency_ms = {
            "retrieve": round((t1 - tc) * 1000, 1),
            "answer": round((t2 - t1) * 1000, 1),
        }
        if history.turns and self.generator is not None:
            answer.latency_ms["condense"] = round((tc - th) * 1000, 1)
        # An abstention or a failed search is not worth a model call: there is nothing
        # confident to ground a generated answer on.
        if self.generator is not None and not answer.abstained and not error:
            answer = (generate or self.generator.answer)(searched, answer, requester.audiences)
        if condensed is not None and condensed.usage is not None:
            # The condensing call is paid for too, also when no answer call followed.
            answer.usage = add_usage(answer.usage, condensed.usage)
            answer.model = answer.model or condensed.usage.model
        # The log keeps the question as asked; what was searched for it is kept beside it.
        answer.question = q
        if history.last is not None:
            answer.follows = history.last.query_id
            answer.standalone_question = searched if searched != q else None
            answer.condense_fallback = condensed.fallback_reason if condensed else None
        answer.latency_ms["total"] = round((time.perf_counter() - t0) * 1000, 1)
        today = utcnow().date()
        answer.citations = [c.aged(today, self.config.stale_after) for c in answer.citations]
        self._log(answer, requester, searched, audiences)
        return answer

    def history(self, requester: Requester) -> threads.History:
        """The bounded history of the requester's thread (empty for a question asked on its
        own, or in a thread the query log knows nothing of)."""
        if requester.thread is None:
            return threads.History()
        key = threads.thread_key(requester.platform, requester.thread)
        return threads.load(self.db, key)

    def answered_in(self, platform: str, thread: str) -> bool:
        """Whether kbot has answered in ``thread`` of ``platform``, by the query log: a
        reply there is a follow-up even when it does not address kbot."""
        return threads.known(self.db, threads.thread_key(platform, thread))

    def retrieve(
        self,
        question: str,
        audiences: frozenset[str] = frozenset({PUBLIC}),
        notes: list[dict[str, Any]] | None = None,
    ) -> list[ScoredChunk]:
        return self.retriever.search(question, self.config.top_k, audiences, notes)

    def compose(
        self,
        question: str,
        hits: list[ScoredChunk],
        pinned: bool = False,
        audiences: frozenset[str] = frozenset({PUBLIC}),
    ) -> Answer:
        """Decide whether the evidence is strong enough, and build the answer text
        (``audiences``: what the requester may read, for the words no document uses)."""
        qid = new_query_id()  # the request id, so logs and the query log share it
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
        # Each document's retrieved chunks, best-ranked first; documents in rank order.
        docs: dict[tuple[str, str], list[Chunk]] = {}
        best_per_doc: dict[tuple[str, str], ScoredChunk] = {}
        for h in hits:
            docs.setdefault(_doc(h.chunk), []).append(h.chunk)
            best_per_doc.setdefault(_doc(h.chunk), h)
        ranked = list(best_per_doc.values())  # hits are best first, so this is too

        # Confidence: how close the best retrieved passage is in meaning. Keyword overlap
        # alone is not evidence (a question can share words with an unrelated runbook).
        confidence = max((h.dense for h in hits), default=0.0)
        # A question about a named thing (an alert, a service) that no retrieved passage
        # mentions is about something the knowledge base does not cover, however close
        # the runbooks for its neighbours are. Only what this requester may see is
        # searched, so the reply reveals nothing about other audiences' documents. A plain
        # word no document uses ("SonarQube", "Cosmos") says the same unless the passages
        # are close in meaning all the same: then it is a detail of covered ground
        # ("our homegrown inventory system").
        close = confidence >= self.config.min_score + WORD_MARGIN
        unused = None if close else (lambda words: self.retriever.unused(words, audiences))
        unknown = [] if pinned else _unknown_names(question, hits, unused)
        # A short question in the words of the best document's title ("How do I deploy a
        # service?" and *Deploying a service*) is about that document, though a
        # few-word question sits further from any passage in meaning than a sentence does.
        if (
            ranked
            and confidence >= self.config.min_score - TITLE_MARGIN
            and procedures.names_subject(question, ranked[0].chunk.title) == 1.0
        ):
            confidence = max(confidence, self.config.min_score)
        if pinned:
            confidence = max(confidence, self.config.min_score)
        if not ranked or confidence < self.config.min_score or unknown:
            cites = [
                Citation.of(h.chunk, i) for i, h in enumerate(ranked[: self.config.max_sources], 1)
            ]
            text = unknown_text(unknown) if unknown and ranked else ABSTAIN_TEXT
            return Answer(qid, question, text, True, cites, retrieved=retrieved, context=context)

        top = ranked[0].dense
        chosen = [ranked[0]] + [h for h in ranked[1:] if h.dense >= top - SOURCE_MARGIN]
        chosen = chosen[: self.config.max_sources]
        # A question asking for an amount is answered only by sources that state one.
        kind = answer_type.expected(question)
        if kind and not any(
            answer_type.supplies(kind, c.text) for h in chosen for c in docs[_doc(h.chunk)]
        ):
            cites = [Citation.of(h.chunk, i) for i, h in enumerate(chosen, 1)]
            text = (
                f"The closest sources I found don't state {answer_type.DESCRIPTIONS[kind]} "
                "for this, so I can't answer it from the knowledge base. "
                "They are below in case they help."
            )
            return Answer(qid, question, text, True, cites, retrieved=retrieved, context=context)
        steps = procedures.asks_for_steps(question)
        # A how-to question whose closest documents only mention what it asks about is not
        # answered by them: say so, rather than quote the paragraphs around the mention.
        passing = (
            steps
            and not pinned
            and procedures.only_in_passing(
                question,
                list(dict.fromkeys(h.chunk.title for h in hits)),
                [h.chunk.text for h in hits],
                [[c.text for c in docs[_doc(h.chunk)]] for h in chosen],
                chosen[0].chunk.title,
            )
        )
        if passing:
            cites = [Citation.of(h.chunk, i) for i, h in enumerate(chosen, 1)]
            text = procedures.not_covered(passing, [h.chunk.title for h in chosen])
            return Answer(qid, question, text, True, cites, retrieved=retrieved, context=context)
        idf = idf_from([h.chunk.text for h in hits])
        kind = answer_type.preferred(question)
        parts = []
        explained = []
        quoted: set[str] = set()  # near-copies of one runbook are not quoted twice
        other = OTHER_SOURCE_CHARS
        leading: list[tuple[str, int]] = []
        for i, h in enumerate(chosen, 1):
            own = docs[_doc(h.chunk)]
            paths = {p for c in own for p in c.heading_path}
            sections = _sections(own)
            if steps and i == 1:
                # The steps may lie in a section that was not retrieved: read it whole.
                sections = _whole_sections(self.document(h.chunk), own)
            budget = FIRST_SOURCE_CHARS if i == 1 else other
            choice = choose(
                sections, question, budget, idf, kind, quoted, procedure=steps and i == 1, source=i
            )
            passage = choice.text
            explained.append({"n": i, "how": choice.how, "blocks": choice.explain()})
            quoted.update(blocks(passage))
            if i == 1 and not steps:
                # A fact question is answered first: the best source's sentences that
                # state it, then the quotes (docs/EVALUATION.md, "The lead"), which do
                # not say again what the lead says.
                leading = lead([(1, choice)], question, idf, kind)
                passage = without(passage, [s for s, _ in leading])
                if leading and not passage.strip():
                    continue
            label = h.chunk.heading if len(own) == 1 else h.chunk.title
            if choice.steps_heading is not None:
                head = procedures.preface(choice.steps_heading, h.chunk.title, i)
                other = PROCEDURE_OTHER_CHARS  # the steps are the answer; the rest are leads
            else:
                head = f"{'From' if i == 1 else 'Also see'} **{label}** [{i}]:"
            # A walked tutorial's first heading is its first step's name, which the line
            # before it does not give: only the title is said already.
            named = {h.chunk.title} if choice.how == "walked" else paths
            parts.append(f"{head}\n\n{tidy_headings(passage, named)}")
        if leading:
            parts.insert(0, " ".join(f"{s} [{n}]" for s, n in leading))
        cites = [Citation.of(h.chunk, i) for i, h in enumerate(chosen, 1)]
        context = _context(question, context, docs, chosen, ranked, idf, kind)
        return Answer(
            qid,
            question,
            "\n\n".join(parts),
            False,
            cites,
            retrieved=retrieved,
            context=context,
            passages=explained,
        )

    def document(self, chunk: Chunk) -> list[Chunk]:
        """Every chunk of ``chunk``'s document, in order, read from the index by the ids
        the last sync gave it; only ``chunk`` when the document is not known to the
        database (a restored one) or the index cannot be read."""
        try:
            with self.db.session() as s:
                row = s.get(IndexedDocument, (chunk.connector, chunk.doc_id))
                count = row.chunk_count if row is not None else 0
            store = self.retriever.store()
            if not count or store is None:
                return [chunk]
            ids = [chunk_id(chunk.connector, chunk.doc_id, i) for i in range(count)]
            got = store.chunks(ids)
        except Exception as e:  # the database or the index: quote what was retrieved
            log.warning("cannot read %s whole: %s", chunk.doc_id, e)
            return [chunk]
        return sorted(got, key=lambda c: c.index) or [chunk]

    def _log(
        self, answer: Answer, requester: Requester, searched: str, audiences: frozenset[str]
    ) -> None:
        vector = None
        if answer.citations:
            # Votes on this answer count for close questions: by this embedding, of what
            # was searched (a follow-up's stand-alone question).
            try:
                vector = to_bytes(self.retriever.vector_of(searched))
            except Exception as e:  # the answer is logged without it
                log.warning("cannot embed the question for the query log: %s", e)
        record = QueryRecord(
            audiences=audience_key(audiences),
            question_vec=vector,
            confidence=answer.confidence,
            adjustments=answer.adjustments or None,
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
            mode=answer.mode,
            model=answer.model,
            input_tokens=answer.usage.input_tokens if answer.usage else None,
            output_tokens=answer.usage.output_tokens if answer.usage else None,
            cached_tokens=answer.usage.cached_tokens if answer.usage else None,
            cost_usd=answer.usage.cost_usd if answer.usage else None,
            fallback_reason=answer.fallback_reason,
            prompt=answer.prompt,
            passages=answer.passages or None,
            thread_key=(
                threads.thread_key(requester.platform, requester.thread)
                if requester.thread is not None
                else None
            ),
            follows=answer.follows,
            standalone_question=answer.standalone_question,
            condense_fallback=answer.condense_fallback,
            reply_to=requester.reply_to,
        )
        # Retried on a new connection when the database restarts under it; merge, so a
        # commit whose acknowledgement was lost is not written twice.
        self.db.write(lambda s: s.merge(record), "log the question")


def unknown_text(names: list[str]) -> str:
    """The abstention that names what the knowledge base does not mention."""
    listed = ", ".join(f"`{n}`" for n in names)
    rest = ABSTAIN_TEXT.split(". ", 1)[1]
    return f"I couldn't find anything about {listed} in the knowledge base. {rest}"


def _unknown_names(
    question: str,
    hits: list[ScoredChunk],
    unused: Callable[[list[str]], list[str]] | None = None,
) -> list[str]:
    """The names in ``question`` that none of ``hits`` contains (file names included),
    and, given ``unused``, its plain words that ``unused`` says no document the requester
    may read uses ("sonarqube", "cosmos"), as written in the question.

    None when the question also names one of the best documents themselves (its title or
    file name): a question about an alert with its own runbook may also name the pod
    state, service or log line it happened with ("ContainerCreating", "fluent-bit"),
    which is context, not the subject."""
    names = identifiers(question)
    words = _plain_words(question) if unused is not None else []
    if not names and not words:
        return []
    seen: set[str] = set()
    for h in hits:
        seen.update(search_terms(h.chunk.search_text()))
    unknown = [n for n in names if stem(n.lower()) not in seen]
    if names and len(unknown) < len(names):  # some names known: one may be a document's
        top = list(dict.fromkeys(_doc(h.chunk) for h in hits))[:NAMED_DOCUMENTS]
        known = {squash(n) for n in names if n not in unknown}
        if any(names_document(known, h.chunk) for h in hits if _doc(h.chunk) in top):
            return []
    # A word the retrieved passages hold is known; the others are looked up in the index.
    words = [w for w in words if stem(w.lower()) not in seen]
    return unknown + (unused(words) if unused is not None and words else [])


def _plain_words(question: str) -> list[str]:
    """The words of ``question`` that may name a thing the knowledge base does not cover:
    of letters only (a name with parts is an identifier), and not everyday English
    (``common_words``; "setting", "supposed", "totally"), unless written with a capital
    inside a sentence ("our Backstage catalog"). None without the everyday words."""
    common = common_words()
    if common is None:
        return []
    out = []
    for m in _WORD.finditer(question):
        tok, w = m.group(), m.group().lower()
        if len(w) < MIN_WORD or w in STOP or w in _CHAT or identifiers(tok):
            continue  # CamelCase is an identifier, judged against the passages
        named = tok[0].isupper() and not _SENTENCE_START.search(question[: m.start()])
        if w not in common or named:
            out.append(tok)
    return list(dict.fromkeys(out))


_WORD = re.compile(r"(?<![\w./-])[A-Za-z]+(?![\w./-])")
_SENTENCE_START = re.compile(r"(?:^|[.?!:]\s+)\W*$")
# Chat shorthand and dates, which are everyday words whatever the tokenizer holds.
_CHAT = frozenset(
    ["lemme", "sorta", "dunno", "halp"]
    + [d.lower() for d in (*calendar.day_name, *calendar.month_name) if d]
)


# How many of the best documents a question may name to be about covered ground.
NAMED_DOCUMENTS = 3


def _doc(chunk: Chunk) -> tuple[str, str]:
    return (chunk.connector, chunk.doc_id)


def _sections(own: list[Chunk]) -> list[tuple[str, int, str]]:
    """A document's retrieved chunks (given best-ranked first) in document order, each with
    its rank among them and the heading it starts under, for passage selection: a runbook
    often spreads its answer over several sections (diagnosis, then mitigation)."""
    ranked = sorted(enumerate(own), key=lambda rc: rc[1].index)
    by_index = {c.index: c for c in own}
    return [(_restored(c, by_index.get(c.index - 1)), rank, _last_heading(c)) for rank, c in ranked]


def _restored(chunk: Chunk, before: Chunk | None) -> str:
    """A chunk's text as it continues the chunk before it, when that one is at hand: as
    ``join_chunks`` rebuilds a document, without the lines the two overlap in and with
    its first line's indentation back (chunks are stored stripped), so a step's code
    block cut from its step stays in the step, instead of breaking the numbered list."""
    if before is None:
        return chunk.text
    joined = join_chunks([before.text, chunk.text])
    if not joined.startswith(before.text):  # the seam was mended across both: keep it
        return chunk.text
    return joined[len(before.text) :].lstrip("\n") or chunk.text


def _whole_sections(whole: list[Chunk], own: list[Chunk]) -> list[tuple[str, int, str]]:
    """A document read whole, as passage-choice sections: its text rebuilt from every chunk
    and cut at headings, each section ranked by the best retrieved chunk under its heading
    (sections no retrieved chunk covers rank after all that one does)."""
    if len(whole) <= len(own):
        return _sections(own)
    rank = {}
    for r, c in enumerate(own):
        rank.setdefault(c.heading_path[-1], r)
    out = []
    for sec in sections_of(join_chunks(c.text for c in whole), whole[0].title):
        heading = sec.path[-1] if len(sec.path) > 1 else ""
        out.append((sec.text, rank.get(sec.path[-1], len(own)), heading))
    return out


def _last_heading(chunk: Chunk) -> str:
    """The heading a chunk's text starts under (a long section is split into several
    chunks; the title is not a heading of any one part)."""
    return chunk.heading_path[-1] if len(chunk.heading_path) > 1 else ""


def _context(
    question: str,
    retrieved: list[Chunk],
    docs: dict[tuple[str, str], list[Chunk]],
    chosen: list[ScoredChunk],
    ranked: list[ScoredChunk],
    idf: dict[str, float],
    kind: str | None = None,
) -> list[Chunk]:
    """The passages an answerer reads, best first: one per cited document, cut from all of
    its retrieved chunks to the question (the first at length), then the best chunk of
    the next documents, then the rest of what was retrieved."""
    out: list[Chunk] = []
    more = [h for h in ranked if h not in chosen][: max(0, CONTEXT_PASSAGES - len(chosen))]
    quoted: set[str] = set()
    for i, h in enumerate(chosen + more):
        own = docs[_doc(h.chunk)] if h in chosen else [h.chunk]
        sections = _sections(own)
        budget = CONTEXT_FIRST_CHARS if i == 0 else CONTEXT_OTHER_CHARS
        text = select_from_sections(sections, question, budget, idf, kind, quoted)
        quoted.update(blocks(text))
        out.append(replace(h.chunk, text=text))
    covered = {_doc(c) for c in out}
    return out + [c for c in retrieved if _doc(c) not in covered]
