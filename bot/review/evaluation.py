"""`kbot eval`: answer quality as numbers, from a JSONL file of questions with known answers.

Every question goes through the same answering service the chat adapters use. The measures
are defined in issue 3; this module computes them from the returned ``Answer`` objects, so
the arithmetic is testable without an index. ``procedure_steps`` also reads the numbered
lists of each procedure question's relevant documents back from the index (``StepLists``).
"""

from __future__ import annotations

import html
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.answer.types import Answer, QuestionError, Requester
from indexer.chunking import join_chunks

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from indexer.store import VectorStore

KINDS = ("lookup", "procedure", "paraphrase", "multi-doc", "unanswerable", "follow-up")
# A follow-up names the question it follows ("follow_up_of") and is asked in its thread.
FOLLOW_UP = "follow-up"
SHARES = (
    "hit@5",
    "recall@5",
    "mrr@10",
    "context_keywords@3",
    "answer_keywords",
    "answer_first_keywords",
    "procedure_steps",
    "cited_relevant",
    "abstain_accuracy",
    "false_abstain",
)
CHARS = ("context_chars@3", "answer_chars")
# The top-level keys of a result, in the order the issue lists them.
MEASURES = (
    "hit@5",
    "recall@5",
    "mrr@10",
    "context_keywords@3",
    "context_chars@3",
    "answer_keywords",
    "answer_first_keywords",
    "procedure_steps",
    "answer_chars",
    "cited_relevant",
    "abstain_accuracy",
    "false_abstain",
    "latency_ms",
)
REQUIRED = ("id", "question", "relevant", "answer_keywords", "kind")
HIT_DOCS, MRR_DOCS, CONTEXT_CHUNKS = 5, 10, 3
# answer_first_keywords looks for the keywords in this much of the answer: answer first.
FIRST_CHARS = 400
# procedure_steps matches each numbered item by this much of its (plain) leading text.
STEP_CHARS = 40


class EvalError(ValueError):
    """The questions file cannot be used as it is; the message says where and why."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    relevant: tuple[str, ...]  # document paths relative to their connector's root
    answer_keywords: tuple[str, ...]
    kind: str
    line: int = 0
    follow_up_of: str | None = None  # the id of the earlier question it follows

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"


def load_questions(path: Path) -> list[Question]:
    """Read and validate a questions file (one JSON object per line; blank lines allowed)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read the questions file {path}: {e}") from None
    return parse_questions(text.splitlines(), str(path))


def parse_questions(lines: Iterable[str], source: str = "<questions>") -> list[Question]:
    """Validate question lines; every problem names the file and line."""
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {n}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        q = _question(data, where, n)
        if q.id in seen:
            raise EvalError(f"{where}: id {q.id!r} was already used on line {seen[q.id]}")
        if q.follow_up_of is not None and q.follow_up_of not in seen:
            raise EvalError(
                f"{where}: follow_up_of {q.follow_up_of!r} is not the id of an earlier "
                "question in the file (a follow-up comes after the question it follows)"
            )
        seen[q.id] = n
        questions.append(q)
    if not questions:
        raise EvalError(f"{source}: no questions (expected one JSON object per line)")
    return questions


def _question(data: Any, where: str, line: int) -> Question:
    if not isinstance(data, dict):
        raise EvalError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise EvalError(
            f"{where}: missing field(s) {', '.join(missing)} "
            f"(each line needs {', '.join(REQUIRED)})"
        )
    for key in ("id", "question"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise EvalError(f"{where}: {key!r} must be a non-empty string")
    for key in ("relevant", "answer_keywords"):
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise EvalError(f"{where}: {key!r} must be a list of non-empty strings")
    kind = data["kind"]
    if kind not in KINDS:
        raise EvalError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "unanswerable" and data["relevant"]:
        raise EvalError(f"{where}: an unanswerable question must have an empty 'relevant'")
    if kind != "unanswerable" and not data["relevant"]:
        raise EvalError(
            f"{where}: a {kind} question needs at least one 'relevant' document "
            "(or kind 'unanswerable')"
        )
    follow_up_of = data.get("follow_up_of")
    if follow_up_of is not None and (not isinstance(follow_up_of, str) or not follow_up_of):
        raise EvalError(f"{where}: 'follow_up_of' must be the id of an earlier question")
    if (kind == FOLLOW_UP) != (follow_up_of is not None):
        raise EvalError(
            f"{where}: a {FOLLOW_UP} question needs 'follow_up_of', and only a {FOLLOW_UP} "
            "question may have one"
        )
    return Question(
        id=data["id"],
        question=data["question"],
        relevant=tuple(dict.fromkeys(data["relevant"])),
        answer_keywords=tuple(data["answer_keywords"]),
        kind=kind,
        line=line,
        follow_up_of=follow_up_of,
    )


def normalize(text: str) -> str:
    """Case-insensitive, whitespace-collapsed form used for keyword matching."""
    return " ".join(text.split()).casefold()


def keywords_in(keywords: Iterable[str], text: str) -> list[str]:
    """The keywords found in ``text``, in their given order."""
    haystack = normalize(text)
    return [k for k in keywords if normalize(k) in haystack]


# -- procedure_steps: the numbered lists of a relevant document ---------------------------------

_ITEM = re.compile(r"^(\s*)\d+[.)]\s+(.*)$")
_FENCE = re.compile(r"^\s*(```+|~~~+)")
# Lines that start a block of their own, so they never continue an item's text lazily.
_OWN_BLOCK = re.compile(r"^\s*(#{1,6}\s|[-*+]\s|>|\|)")
_ELLIPSIS = re.compile(r"…|\.\.\.")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)\s]*\)")  # [text](url), ![alt](src): the text
_SLACK_LINK = re.compile(r"<[^<>|\s]+\|([^<>]*)>")  # Slack mrkdwn <url|text>: the text
_MARKS = re.compile(r"[*_`~]")  # emphasis and code marks, Markdown's and mrkdwn's


def plain(text: str) -> str:
    """``normalize`` without the markup a quote or a reformatted answer may add or drop:
    HTML entities decoded, Markdown and Slack links reduced to their text, and the
    emphasis/code marks ``* _ ` ~`` removed. Used on both sides of procedure_steps."""
    text = _SLACK_LINK.sub(r"\1", _MD_LINK.sub(r"\1", html.unescape(text)))
    return normalize(_MARKS.sub("", text))


@dataclass(frozen=True)
class StepList:
    """One numbered list of a document, as procedure_steps looks for it in an answer."""

    items: tuple[str, ...]  # each item's leading text: ``plain``, number stripped, STEP_CHARS
    ellipses: int = 0  # "…" or "..." the list itself has between its first and last item

    def kept_in(self, answer: str) -> bool:
        """Whether ``answer`` (already ``plain``) has every item's leading text in order,
        with no "…"/"..." between the first and the last item beyond the list's own."""
        first = self.items[0]
        start = answer.find(first)
        while start >= 0:
            pos = start + len(first)
            for item in self.items[1:]:
                at = answer.find(item, pos)
                if at < 0:
                    return False  # a later start cannot find what this one did not
                pos = at + len(item)
            if len(_ELLIPSIS.findall(answer[start:pos])) <= self.ellipses:
                return True
            start = answer.find(first, start + 1)  # a later quote of the list may be whole
        return False


def numbered_lists(text: str) -> tuple[StepList, ...]:
    """The numbered lists of Markdown ``text`` with at least two items, in document order.

    An item is a line matching ``^\\s*\\d+[.)]\\s+`` outside a code block; its text is the
    rest of that line plus the lines that continue it directly (no blank line between:
    indented, or unindented "lazy" text that does not start a heading, bullet, quote or
    table). A list is a run of items, the first item's indentation setting its level.
    Between two items the run may hold blank lines, lines indented at least two columns
    deeper than the items (item paragraphs, nested lists, indented code) and fenced code
    blocks at any indentation (runbooks often leave a step's command unindented). Any
    other line, e.g. a heading or an unindented paragraph after a blank line, ends it.
    Numbers are ignored ("1." repeated, "1)" and restarts are all items), so two lists
    separated only by blank lines or a code block read as one; nested lists are part of
    their parent item, not lists of their own.
    """
    found: list[StepList] = []
    items: list[str] = []
    lines: list[str] = []  # the run's lines, for counting its own ellipses
    upto = 0  # lines[:upto] reach the end of the last item's text
    base = 0
    fence: str | None = None
    lazy = False  # the line before was part of the last item's text

    def close() -> None:
        nonlocal upto
        if len(items) >= 2:
            own = len(_ELLIPSIS.findall(plain("\n".join(lines[:upto]))))
            found.append(StepList(tuple(plain(t)[:STEP_CHARS].strip() for t in items), own))
        items.clear()
        lines.clear()
        upto = 0

    for line in text.expandtabs(4).split("\n"):
        opening = _FENCE.match(line) if fence is None else None
        if fence is not None or opening:
            if opening:
                fence = opening.group(1)
            elif line.strip().startswith(fence):
                fence = None
            lazy = False
            if items:
                lines.append(line)
            continue
        if not line.strip():
            lazy = False
            if items:
                lines.append(line)
            continue
        item = _ITEM.match(line)
        indent = len(line) - len(line.lstrip())
        if items and indent >= base + 2:  # inside the last item
            if lazy and not item and not _OWN_BLOCK.match(line):
                items[-1] += " " + line.strip()
                upto = len(lines) + 1
            else:
                lazy = False
            lines.append(line)
        elif item:
            if not items:
                base = indent
            items.append(item.group(2))
            lines.append(line)
            upto = len(lines)
            lazy = True
        elif items and lazy and not _OWN_BLOCK.match(line):
            items[-1] += " " + line.strip()
            lines.append(line)
            upto = len(lines)
        else:
            close()
            lazy = False
    close()
    return tuple(found)


class StepLists:
    """The numbered lists of each procedure question's relevant documents, read from the
    index: a document's chunks (by ``doc_id``, per connector, in chunk order) joined with
    ``join_chunks``. Each path is read once."""

    def __init__(self, store: VectorStore):
        self.store = store
        self.cache: dict[str, tuple[StepList, ...]] = {}

    def __call__(self, question: Question) -> tuple[StepList, ...]:
        if question.kind != "procedure":
            return ()
        return tuple(s for path in question.relevant for s in self.of(path))

    def of(self, path: str) -> tuple[StepList, ...]:
        if path not in self.cache:
            self.cache[path] = tuple(
                s for text in self._documents(path) for s in numbered_lists(text)
            )
        return self.cache[path]

    def _documents(self, path: str) -> list[str]:
        """The text of every indexed document with this path (one per connector)."""
        collection = self.store.collection
        if collection is None:
            return []
        try:
            got = collection.get(where={"doc_id": path}, include=["documents", "metadatas"])
        except Exception as e:  # chromadb raises many types
            raise EvalError(f"cannot read the chunks of {path!r} from the index: {e}") from e
        docs: dict[str, list[tuple[int, str]]] = {}
        for text, meta in zip(got["documents"], got["metadatas"], strict=True):
            meta = meta or {}
            docs.setdefault(str(meta.get("connector", "")), []).append(
                (int(meta.get("index", 0)), text or "")
            )
        return [join_chunks(t for _, t in sorted(chunks)) for chunks in docs.values()]


@dataclass(frozen=True)
class Outcome:
    """One question's answer, judged against what the question expects."""

    question: Question
    docs: tuple[tuple[str, str, float], ...]  # distinct (path, connector, score), best first
    context_keyword_hits: tuple[str, ...]
    context_chars: int
    answer_keyword_hits: tuple[str, ...]
    answer_chars: int
    cited: tuple[str, ...]
    abstained: bool
    latency_ms: float
    # With an ``llm:``: the model consulted (None when it was not, e.g. on an abstention),
    # whether its answer was shown, why not, and what the call cost.
    model: str | None = None
    generated: bool = False
    fallback_reason: str | None = None
    cost_usd: float | None = None
    # The keywords found in the answer's first FIRST_CHARS characters.
    answer_first_keyword_hits: tuple[str, ...] = ()
    # procedure_steps: how many numbered lists of the relevant documents were checked
    # (procedure questions only) and whether the answer kept one of them whole.
    step_lists: int = 0
    steps_kept: bool = False

    @classmethod
    def judge(cls, question: Question, answer: Answer, steps: Sequence[StepList] = ()) -> Outcome:
        """``steps``: the numbered lists of the question's relevant documents (see
        ``numbered_lists``); without them, or for a question that is not a procedure,
        procedure_steps is None."""
        steps = tuple(steps) if question.kind == "procedure" else ()
        text = plain(answer.text) if steps else ""
        docs: dict[str, tuple[str, str, float]] = {}
        for r in answer.retrieved:
            docs.setdefault(r["path"], (r["path"], r["connector"], float(r["score"])))
        context = answer.context[:CONTEXT_CHUNKS]
        return cls(
            question=question,
            docs=tuple(docs.values()),
            context_keyword_hits=tuple(
                keywords_in(question.answer_keywords, "\n".join(c.text for c in context))
            ),
            context_chars=sum(len(c.text) for c in context),
            answer_keyword_hits=tuple(keywords_in(question.answer_keywords, answer.text)),
            answer_first_keyword_hits=tuple(
                keywords_in(question.answer_keywords, answer.text[:FIRST_CHARS])
            ),
            step_lists=len(steps),
            steps_kept=any(s.kept_in(text) for s in steps),
            answer_chars=len(answer.text),
            cited=tuple(c.path for c in answer.citations),
            abstained=answer.abstained,
            latency_ms=float(answer.latency_ms.get("total", 0.0)),
            model=answer.model,
            generated=answer.mode == "generated",
            fallback_reason=answer.fallback_reason,
            cost_usd=answer.usage.cost_usd if answer.usage else None,
        )

    @property
    def paths(self) -> list[str]:
        return [d[0] for d in self.docs]

    @property
    def first_relevant_rank(self) -> int | None:
        """1-based rank of the first relevant document among the first 10, if any."""
        relevant = set(self.question.relevant)
        for rank, path in enumerate(self.paths[:MRR_DOCS], 1):
            if path in relevant:
                return rank
        return None

    @property
    def hit(self) -> bool:
        return bool(set(self.paths[:HIT_DOCS]) & set(self.question.relevant))

    @property
    def recall(self) -> float:
        found = set(self.paths[:HIT_DOCS]) & set(self.question.relevant)
        return len(found) / len(self.question.relevant)

    @property
    def reciprocal_rank(self) -> float:
        rank = self.first_relevant_rank
        return 0.0 if rank is None else 1.0 / rank

    @property
    def context_keywords(self) -> float | None:
        total = len(self.question.answer_keywords)
        return len(self.context_keyword_hits) / total if total else None

    @property
    def answer_keywords(self) -> float | None:
        total = len(self.question.answer_keywords)
        return len(self.answer_keyword_hits) / total if total else None

    @property
    def answer_first_keywords(self) -> float | None:
        """Like answer_keywords, over the answer's first FIRST_CHARS characters only."""
        total = len(self.question.answer_keywords)
        return len(self.answer_first_keyword_hits) / total if total else None

    @property
    def procedure_steps(self) -> float | None:
        """1.0 when a procedure question's answer keeps one of its relevant documents'
        numbered lists (of two or more items) whole: every item's leading text in order,
        with no "…"/"..." between the first and last item that the list does not have
        itself. Items are matched by text, not number, so renumbered or reformatted steps
        (Slack mrkdwn, a model's own "1.") count. None for other kinds, and when no
        relevant document has such a list. An abstention is scored, like answer_keywords."""
        if self.question.kind != "procedure" or not self.step_lists:
            return None
        return float(self.steps_kept)

    @property
    def cited_relevant(self) -> bool:
        # An abstention's "closest sources" are offered as leads, not cited as support.
        return not self.abstained and bool(set(self.cited) & set(self.question.relevant))

    @property
    def verdict(self) -> str:
        if not self.question.answerable:
            return "abstained" if self.abstained else "false_answer"
        if self.abstained:
            return "false_abstain"
        return "hit" if self.hit else "miss"

    def report(self) -> dict[str, Any]:
        """One line of the per-question report."""
        q = self.question
        return {
            "id": q.id,
            "kind": q.kind,
            **({"follow_up_of": q.follow_up_of} if q.follow_up_of else {}),
            "question": q.question,
            "verdict": self.verdict,
            "relevant": list(q.relevant),
            "first_relevant_rank": self.first_relevant_rank,
            "retrieved": [
                {"path": p, "connector": c, "score": s} for p, c, s in self.docs[:MRR_DOCS]
            ],
            "cited": list(self.cited),
            "abstained": self.abstained,
            "context_keywords": {
                "found": list(self.context_keyword_hits),
                "missing": [k for k in q.answer_keywords if k not in self.context_keyword_hits],
            },
            "answer_keywords": {
                "found": list(self.answer_keyword_hits),
                "missing": [k for k in q.answer_keywords if k not in self.answer_keyword_hits],
            },
            "answer_first_keywords": {
                "found": list(self.answer_first_keyword_hits),
                "missing": [
                    k for k in q.answer_keywords if k not in self.answer_first_keyword_hits
                ],
            },
            "procedure_steps": {
                "score": None if self.procedure_steps is None else int(self.procedure_steps),
                "lists": self.step_lists,
            },
            "context_chars": self.context_chars,
            "answer_chars": self.answer_chars,
            "latency_ms": self.latency_ms,
            **(
                {
                    "generated": self.generated,
                    "fallback_reason": self.fallback_reason,
                    "cost_usd": self.cost_usd,
                }
                if self.model
                else {}
            ),
        }


def evaluate(
    questions: Iterable[Question],
    answer: Callable[[str, str | None], Answer],
    steps: Callable[[Question], Sequence[StepList]] | None = None,
    threads: bool = True,
) -> list[Outcome]:
    """Ask every question through ``answer(question, thread)`` and judge each reply.

    Each question starts a thread of its own (its id, under a prefix new to this run, so
    runs never share threads), and a follow-up is asked in the thread of the question it
    follows. Without ``threads`` every question is asked on its own (thread None): what
    the follow-ups score then is what their thread's context is worth. ``steps`` gives a
    question's relevant numbered lists (``StepLists``); without it procedure_steps is None.
    """
    run_id = uuid.uuid4().hex[:12]
    thread_of: dict[str, str] = {}
    outcomes = []
    for q in questions:
        thread = thread_of.get(q.follow_up_of or "", f"eval-{run_id}:{q.id}")
        thread_of[q.id] = thread
        try:
            reply = answer(q.question, thread if threads else None)
        except QuestionError as e:
            raise EvalError(f"question {q.id!r} (line {q.line}) cannot be asked: {e}") from None
        outcomes.append(Outcome.judge(q, reply, steps(q) if steps else ()))
    return outcomes


def run(runtime: Runtime, questions: Iterable[Question], threads: bool = True) -> list[Outcome]:
    """Evaluate ``questions`` against a runtime's index, through its answering service;
    follow-ups in their threads unless ``threads`` is False (see ``evaluate``)."""
    if runtime.store.count() == 0:
        # Otherwise every question "abstains" and the numbers look like a retrieval failure.
        raise EvalError(
            f"the index in {runtime.config.storage.data_dir} ({runtime.config.source}) is empty; "
            "run `kbot sync` first"
        )
    service = runtime.answering
    # The labeled set is about the whole index, so eval reads as every audience.
    requester = Requester(platform="eval", audiences=runtime.all_audiences)
    return evaluate(
        questions,
        lambda q, thread: service.ask(q, replace(requester, thread=thread)),
        StepLists(runtime.store),
        threads,
    )


def summarize(outcomes: list[Outcome], llm: bool = False) -> dict[str, Any]:
    """The measures overall and per kind, plus ``n``. A measure with no questions is None.

    ``llm`` (the run had an ``llm:``) adds the share of answers the model wrote
    (``generated``) and what its calls cost (``cost_usd``: total and per question)."""
    result = _measures(outcomes)
    result["per_kind"] = {
        kind: {**_measures(group), "n": len(group)}
        for kind in KINDS
        if (group := [o for o in outcomes if o.question.kind == kind])
    }
    result["n"] = len(outcomes)
    if llm:
        total = sum(o.cost_usd or 0.0 for o in outcomes)
        result["generated"] = _round("generated", _mean([float(o.generated) for o in outcomes]))
        result["cost_usd"] = {
            "total": round(total, 6),
            "per_question": round(total / len(outcomes), 8) if outcomes else None,
        }
    return result


def _measures(outcomes: list[Outcome]) -> dict[str, Any]:
    # Only abstention is measured on unanswerable questions; everything else on answerable.
    ans = [o for o in outcomes if o.question.answerable]
    un = [o for o in outcomes if not o.question.answerable]
    latencies = [o.latency_ms for o in outcomes]
    values: dict[str, float | None] = {
        "hit@5": _mean([float(o.hit) for o in ans]),
        "recall@5": _mean([o.recall for o in ans]),
        "mrr@10": _mean([o.reciprocal_rank for o in ans]),
        "context_keywords@3": _mean([o.context_keywords for o in ans]),
        "context_chars@3": _mean([float(o.context_chars) for o in ans]),
        "answer_keywords": _mean([o.answer_keywords for o in ans]),
        "answer_first_keywords": _mean([o.answer_first_keywords for o in ans]),
        "procedure_steps": _mean([o.procedure_steps for o in ans]),
        "answer_chars": _mean([float(o.answer_chars) for o in ans]),
        "cited_relevant": _mean([float(o.cited_relevant) for o in ans]),
        "abstain_accuracy": _mean([float(o.abstained) for o in un]),
        "false_abstain": _mean([float(o.abstained) for o in ans]),
    }
    out: dict[str, Any] = {k: _round(k, v) for k, v in values.items()}
    out["latency_ms"] = (
        {"p50": round(percentile(latencies, 50), 1), "p95": round(percentile(latencies, 95), 1)}
        if latencies
        else None
    )
    return {k: out[k] for k in MEASURES}


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _round(measure: str, value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 1 if measure in CHARS else 4)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile, interpolating linearly between ranks (as numpy does)."""
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def difference(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``other`` minus ``base`` per measure, overall and for the kinds both runs have."""
    diff = _diff_measures(base, other)
    diff["per_kind"] = {
        kind: _diff_measures(base["per_kind"][kind], other["per_kind"][kind])
        for kind in KINDS
        if kind in base["per_kind"] and kind in other["per_kind"]
    }
    return diff


def _diff_measures(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in MEASURES:
        b, o = base.get(m), other.get(m)  # a result saved before a measure existed lacks it
        if m == "latency_ms":
            out[m] = None if b is None or o is None else {p: round(o[p] - b[p], 1) for p in b}
        else:
            out[m] = None if b is None or o is None else _round(m, o - b)
    return out


# -- text output -------------------------------------------------------------------------------


def _cell(label: str, value: Any, signed: bool = False) -> str:
    if value is None:
        return "-"
    if label == "n":
        return str(value)
    decimals = 0 if label in CHARS else 1 if label.startswith("latency_ms") else 3
    return f"{value:{'+' if signed else ''}.{decimals}f}"


def _rows(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) per table row; latency is split into its two percentiles."""
    rows: list[tuple[str, Any]] = [("n", result["n"])]
    for m in MEASURES:
        if m == "latency_ms":
            lat = result[m] or {}
            rows += [("latency_ms p50", lat.get("p50")), ("latency_ms p95", lat.get("p95"))]
        else:
            rows.append((m, result[m]))
    return rows


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        first = r[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        lines.append("  ".join([first, *rest]).rstrip())
    return "\n".join(lines)


def format_result(result: dict[str, Any]) -> str:
    """A table of every measure: overall, then one column per kind present."""
    kinds = list(result["per_kind"])
    columns = [_rows(c) for c in [result, *(result["per_kind"][k] for k in kinds)]]
    body = [
        [label] + [_cell(label, col[i][1]) for col in columns]
        for i, (label, _) in enumerate(columns[0])
    ]
    body += [[label, _llm_cell(label, v)] + [""] * len(kinds) for label, v in _llm_rows(result)]
    return _table(["measure", "all", *kinds], body)


def _llm_rows(result: dict[str, Any]) -> list[tuple[str, float | None]]:
    """The rows an LLM-mode run adds (none for an extractive run)."""
    if "generated" not in result:
        return []
    cost = result["cost_usd"]
    return [
        ("generated", result["generated"]),
        ("cost_usd total", cost["total"]),
        ("cost_usd per question", cost["per_question"]),
    ]


def _llm_cell(label: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:{'+' if signed else ''}.{6 if label.startswith('cost') else 3}f}"


def format_comparison(base: dict[str, Any], other: dict[str, Any], diff: dict[str, Any]) -> str:
    """Overall measures of two runs side by side, with other minus base."""
    body = []
    diff_rows = dict(_rows({**diff, "n": None}))
    for (label, b), (_, o) in zip(_rows(base), _rows(other), strict=True):
        body.append(
            [label, _cell(label, b), _cell(label, o), _cell(label, diff_rows[label], signed=True)]
        )
    # Cost and the generated share, when either run had an llm: (an extractive run's are 0).
    if "generated" in base or "generated" in other:
        zero = [("generated", 0.0), ("cost_usd total", 0.0), ("cost_usd per question", 0.0)]
        llm_base = _llm_rows(base) or zero
        for (label, b), (_, o) in zip(llm_base, _llm_rows(other) or zero, strict=True):
            d = None if b is None or o is None else o - b
            body.append(
                [label, _llm_cell(label, b), _llm_cell(label, o), _llm_cell(label, d, signed=True)]
            )
    return _table(["measure", "base", "other", "diff"], body)


def write_report(path: Path, runs: list[tuple[str, list[Outcome]]]) -> None:
    """The per-question report as JSON Lines; ``runs`` pairs a config name with its outcomes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for config, outcomes in runs:
            for o in outcomes:
                f.write(json.dumps({"config": config, **o.report()}) + "\n")
