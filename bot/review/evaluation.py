"""`kbot eval`: answer quality as numbers, from a JSONL file of questions with known answers.

Every question goes through the same answering service the chat adapters use. The measures
are defined in issue 3; this module computes them from the returned ``Answer`` objects, so
the arithmetic is testable without an index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.answer.types import Answer, QuestionError, Requester

if TYPE_CHECKING:
    from bot.runtime import Runtime

KINDS = ("lookup", "procedure", "paraphrase", "multi-doc", "unanswerable")
SHARES = (
    "hit@5",
    "recall@5",
    "mrr@10",
    "context_keywords@3",
    "answer_keywords",
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
    "answer_chars",
    "cited_relevant",
    "abstain_accuracy",
    "false_abstain",
    "latency_ms",
)
REQUIRED = ("id", "question", "relevant", "answer_keywords", "kind")
HIT_DOCS, MRR_DOCS, CONTEXT_CHUNKS = 5, 10, 3


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
    return Question(
        id=data["id"],
        question=data["question"],
        relevant=tuple(dict.fromkeys(data["relevant"])),
        answer_keywords=tuple(data["answer_keywords"]),
        kind=kind,
        line=line,
    )


def normalize(text: str) -> str:
    """Case-insensitive, whitespace-collapsed form used for keyword matching."""
    return " ".join(text.split()).casefold()


def keywords_in(keywords: Iterable[str], text: str) -> list[str]:
    """The keywords found in ``text``, in their given order."""
    haystack = normalize(text)
    return [k for k in keywords if normalize(k) in haystack]


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

    @classmethod
    def judge(cls, question: Question, answer: Answer) -> Outcome:
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


def evaluate(questions: Iterable[Question], answer: Callable[[str], Answer]) -> list[Outcome]:
    """Ask every question through ``answer`` and judge each reply."""
    outcomes = []
    for q in questions:
        try:
            reply = answer(q.question)
        except QuestionError as e:
            raise EvalError(f"question {q.id!r} (line {q.line}) cannot be asked: {e}") from None
        outcomes.append(Outcome.judge(q, reply))
    return outcomes


def run(runtime: Runtime, questions: Iterable[Question]) -> list[Outcome]:
    """Evaluate ``questions`` against a runtime's index, through its answering service."""
    if runtime.store.count() == 0:
        # Otherwise every question "abstains" and the numbers look like a retrieval failure.
        raise EvalError(
            f"the index in {runtime.config.storage.data_dir} ({runtime.config.source}) is empty; "
            "run `kbot sync` first"
        )
    service = runtime.answering
    # The labeled set is about the whole index, so eval reads as every audience.
    requester = Requester(platform="eval", audiences=runtime.all_audiences)
    return evaluate(questions, lambda q: service.ask(q, requester))


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
        b, o = base[m], other[m]
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
