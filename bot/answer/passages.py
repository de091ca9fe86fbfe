"""The extractive answerer: quote the passages of the top chunks that best match the question.

It needs no LLM. It picks, from each cited chunk, the blocks (paragraphs, list runs, code
blocks) that share the most distinctive words with the question, keeps them in document
order, and pulls in the code block that follows a chosen instruction, since a runbook step
is usually "do this:" followed by the command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bot.answer.answer_type import supplies
from indexer.chunking import clean_heading
from indexer.text import search_terms, terms

_HEADING_LINE = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$")


def blocks(text: str) -> list[str]:
    """Split a chunk into blocks: fenced code kept whole, paragraphs, and list items."""
    out: list[str] = []
    cur: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        fence = line.lstrip().startswith(("```", "~~~"))
        if in_fence:
            cur.append(line)
            if fence:
                out.append("\n".join(cur))
                cur, in_fence = [], False
            continue
        if fence:
            if cur:
                out.append("\n".join(cur))
            cur, in_fence = [line], True
        elif not line.strip():
            if cur:
                out.append("\n".join(cur))
            cur = []
        elif re.match(r"^\s*([-*+]|\d+[.)])\s+", line) and cur and not _is_item(cur[0]):
            out.append("\n".join(cur))
            cur = [line]
        else:
            cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return [b for b in out if b.strip()]


def _is_item(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)])\s+", line))


def _is_code(block: str) -> bool:
    return block.lstrip().startswith(("```", "~~~"))


def _is_heading(block: str) -> bool:
    return block.lstrip().startswith("#") and "\n" not in block.strip()


# ---------------------------------------------------------------- the ranking model
#
# A block's score is one linear model: the sum of its features' weighted values, divided by
# a length normaliser. Each feature is computed in one place (its function below), the
# weights and measured notes sit beside it in FEATURES, and ``_contributions`` combines
# them. An ablation drops a feature from the list (bench/passages.py does, per feature);
# ``Choice.explain()`` shows each feature's share of a chosen block's score, and the trace
# of an answer shows it too.


@dataclass(frozen=True)
class Block:
    """A paragraph, list run or code block of a document, where it sits."""

    text: str
    rank: int  # its section's rank among the document's retrieved chunks (0: the best)
    heading: str  # the heading it sits under ("" when none)

    @cached_property
    def words(self) -> frozenset[str]:
        return frozenset(terms(self.text))

    @cached_property
    def parts(self) -> frozenset[str]:
        """Its words and the parts of its compound names (``alertmanager.yaml``)."""
        return frozenset(search_terms(self.text))


@dataclass(frozen=True)
class Query:
    """What the features know of the question."""

    words: frozenset[str]
    idf: dict[str, float]
    kind: str | None  # the amount asked for (bot.answer.answer_type.preferred), if any

    def weigh(self, words: Iterable[str]) -> float:
        return sum(self.idf.get(w, 1.0) for w in words)


@dataclass(frozen=True)
class Feature:
    """One signal of a block's relevance: ``value(block, query)``, counted ``weight`` times.
    A feature that ``needs_evidence`` counts only when another one found something."""

    name: str
    weight: float
    value: Callable[[Block, Query], float]
    note: str
    needs_evidence: bool = False


def question_words(b: Block, q: Query) -> float:
    """The question's words in the block, each weighted by its idf over the retrieved
    chunks (the alert name every chunk shares counts less)."""
    return q.weigh(q.words & b.words)


def name_parts(b: Block, q: Query) -> float:
    """Question words found only inside a compound name of the block."""
    return q.weigh(q.words & (b.parts - b.words))


def heading_words(b: Block, q: Query) -> float:
    """Question words found only in the heading the block sits under."""
    return q.weigh(q.words & (frozenset(terms(b.heading)) - b.parts))


def section_rank(b: Block, q: Query) -> float:
    """How good the block's section is for the question: 1 for the document's best-ranked
    chunk, 1/2 for the next, and so on."""
    return 1 / (1 + b.rank)


def has_code(b: Block, q: Query) -> float:
    """1 when the block holds code: runbook answers are mostly commands and names."""
    return 1.0 if "`" in b.text else 0.0


def states_amount(b: Block, q: Query) -> float:
    """1 when the question asks for an amount and the block states one of that kind."""
    return 1.0 if q.kind is not None and supplies(q.kind, b.text) else 0.0


FEATURES: tuple[Feature, ...] = (
    Feature(
        "question_words",
        1.0,
        question_words,
        "the base signal, the unit the other weights are in",
    ),
    Feature(
        "name_parts",
        0.5,
        name_parts,
        "'yaml' in `alertmanager.yaml`, as keyword search already matches it. Dev set: "
        "answer_keywords +0.011, context_keywords@3 +0.006 (0.25 the same; 1.0 lets an alert "
        "name's parts outweigh the rest: context -0.005)",
    ),
    Feature(
        "heading_words",
        0.25,
        heading_words,
        "a block is about what its heading says. Dev set: answer_keywords 0.798 -> 0.808, "
        "context_keywords@3 0.917 -> 0.930; 0.15-0.35 the same, 0.5 0.809 / 0.923",
    ),
    Feature(
        "section_rank",
        2.0,
        section_rank,
        "the best section lends its blocks a head start, so a command under a heading that "
        "only paraphrases the question is still quoted. Dev set: context_keywords@3 0.857 -> "
        "0.883. Only with evidence: a short line that answers nothing gets none of it",
        needs_evidence=True,
    ),
    Feature(
        "code",
        2.0,
        has_code,
        "a command, a file or field name. Dev set: answer_keywords 0.731 -> 0.768",
    ),
    Feature(
        "answer_type",
        2.0,
        states_amount,
        "'how long' lifts the blocks that state a duration: the answer-type match of classic "
        "question answering. Dev set: answer_keywords +0.026 (1 to 4 the same)",
    ),
)

# Longer blocks say more by chance: the score is divided by sqrt(1 + length / LENGTH_SCALE).
LENGTH_SCALE = 200
# A command block, or the one-line "run this:" before it, says little by itself: a code
# block or one under SHORT_BLOCK characters inherits this share of the score of the block
# before it (the paragraph that explains it).
INHERIT = 0.5
SHORT_BLOCK = 120
# The first block chosen may overshoot the budget by this factor rather than quote nothing.
OVERSHOOT = 1.5


def _contributions(b: Block, q: Query, features: Sequence[Feature]) -> dict[str, float]:
    """Each feature's weighted value for ``b``, in the order of ``features``."""
    out = {f.name: f.weight * f.value(b, q) for f in features if not f.needs_evidence}
    evidence = any(out.values())
    for f in features:
        if f.needs_evidence:
            out[f.name] = f.weight * f.value(b, q) if evidence else 0.0
    return {f.name: out[f.name] for f in features}


def _length_norm(b: Block) -> float:
    return math.sqrt(1 + len(b.text) / LENGTH_SCALE)


@dataclass
class Choice:
    """The blocks chosen from a document, and why."""

    text: str
    blocks: list[Block] = field(default_factory=list)
    contributions: list[dict[str, float]] = field(default_factory=list)  # per block
    scores: list[float] = field(default_factory=list)  # after inheritance
    chosen: list[int] = field(default_factory=list)  # indexes, in document order
    inherited: set[int] = field(default_factory=set)  # scored by the block before them
    # "chosen" (blocks scored and picked), "whole" (the document fit the budget),
    # "unquoted" (whole, less blocks a near-copy already quoted), "cut" (nothing scored)
    how: str = "chosen"

    def explain(self) -> list[dict[str, Any]]:
        """Per chosen block: its start, score, and each feature's share of its own score
        (``inherited`` when it was scored by the block before it)."""
        out = []
        for i in self.chosen:
            c = self.contributions[i]
            total = sum(c.values())
            shares = {k: round(v / total, 3) for k, v in c.items() if v} if total else {}
            first = self.blocks[i].text.strip().split("\n", 1)[0]
            out.append(
                {
                    "block": first[:80],
                    "score": round(self.scores[i], 3),
                    "shares": shares,
                    "inherited": i in self.inherited,
                }
            )
        return out


def select_from_sections(
    sections: Sequence[tuple[str, int] | tuple[str, int, str]],
    question: str,
    budget: int,
    idf: dict[str, float] | None = None,
    kind: str | None = None,
    skip: Collection[str] = (),
) -> str:
    """The text of ``choose(...)``."""
    return choose(sections, question, budget, idf, kind, skip).text


def choose(
    sections: Sequence[tuple[str, int] | tuple[str, int, str]],
    question: str,
    budget: int,
    idf: dict[str, float] | None = None,
    kind: str | None = None,
    skip: Collection[str] = (),
    features: Sequence[Feature] | None = None,
) -> Choice:
    """The most relevant blocks of ``sections`` within about ``budget`` characters, kept in
    document order.

    Each section is ``(text, rank)`` or ``(text, rank, heading)``: ``rank`` 0 is the
    document's best-ranked section, ``heading`` the one its text starts under. Blocks are
    scored by ``features`` (default FEATURES), then chosen best first, each bringing along
    the command or list it introduces. Blocks in ``skip`` (already quoted from a near-copy
    of this document) are left out, unless nothing else is left.
    """
    features = FEATURES if features is None else features
    whole = "\n\n".join(sec[0] for sec in sections)
    if skip:
        every = blocks(whole)
        new = [b for b in every if b not in skip]
        if not new:
            skip = ()  # nothing new: quote it again rather than nothing
        elif len(whole) <= budget and len(new) < len(every):
            return Choice("\n\n".join(new).strip(), how="unquoted")
    if len(whole) <= budget:
        return Choice(whole.strip(), how="whole")
    bs: list[Block] = []
    seen: set[str] = set()
    for t, rank, *heading in sections:
        head = heading[0] if heading else ""  # the heading the section's text starts under
        for b in blocks(t):
            if _is_heading(b):
                head = b
            if b in seen or b in skip:
                continue
            seen.add(b)
            bs.append(Block(b, rank, head))
    query = Query(frozenset(terms(question)), idf or {}, kind)
    contributions = [_contributions(b, query, features) for b in bs]
    own = [sum(c.values()) / _length_norm(b) for b, c in zip(bs, contributions, strict=True)]
    scores = list(own)
    inherited: set[int] = set()
    for i in range(1, len(bs)):
        if (_is_code(bs[i].text) or len(bs[i].text) < SHORT_BLOCK) and INHERIT * own[i - 1] > own[
            i
        ]:
            scores[i] = INHERIT * own[i - 1]
            inherited.add(i)
    texts = [b.text for b in bs]
    order = sorted(range(len(bs)), key=lambda i: (-scores[i], i))
    chosen: set[int] = set()
    used = 0
    for i in order:
        if _is_heading(texts[i]) or (scores[i] <= 0 and chosen):
            continue
        add = {i}
        # Prose before code brings its command along, and a block ending in ":" the list
        # or steps it introduces.
        follows = i + 1 < len(bs) and not _is_code(texts[i])
        if follows and (_is_code(texts[i + 1]) or texts[i].rstrip().endswith(":")):
            add.add(i + 1)
        cost = sum(len(texts[j]) for j in add - chosen)
        if used + cost > budget and chosen:
            continue
        if used + cost > budget * OVERSHOOT:
            continue
        chosen |= add
        used += cost
        if used >= budget:
            break
    if not chosen:
        return Choice(_truncate(whole, budget), how="cut")
    parts: list[str] = []
    prev = -2
    for i in sorted(chosen):
        if prev >= 0 and i != prev + 1:
            parts.append("…")
        parts.append(texts[i])
        prev = i
    return Choice("\n\n".join(parts).strip(), bs, contributions, scores, sorted(chosen), inherited)


def tidy_headings(passage: str, heading_path: Iterable[str]) -> str:
    """Drop leading heading lines the citation already names; make the rest bold lines.

    Chat surfaces (Slack mrkdwn, Teams cards, the web chat) have no headings inside a
    message, and "From **Runbook › Diagnosis**" followed by "# Runbook" reads twice.
    """
    named = {h.casefold() for h in heading_path}
    lines = passage.split("\n")
    out: list[str] = []
    in_fence = False
    leading = True
    for line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else _HEADING_LINE.match(line)
        if m:
            text = m.group(1).strip()
            if leading and clean_heading(text).casefold() in named:
                continue
            line = f"**{text}**"
        if line.strip():
            leading = False
        out.append(line)
    return "\n".join(out).strip()


def _truncate(text: str, budget: int) -> str:
    cut = text[:budget]
    if "```" in cut and cut.count("```") % 2:
        cut = cut[: cut.rfind("```")]
    space = cut.rfind(" ")
    return (cut[:space] if space > budget // 2 else cut).rstrip() + " …"


def idf_from(texts: Sequence[str]) -> dict[str, float]:
    """Inverse document frequency over the retrieved chunks: words every chunk shares
    (the alert name, say) count less than the words that single out a passage. Parts of
    compound names are counted too, for the ``name_parts`` feature."""
    n = len(texts)
    df: dict[str, int] = {}
    for t in texts:
        for w in set(search_terms(t)):
            df[w] = df.get(w, 0) + 1
    return {w: math.log(1 + n / c) for w, c in df.items()}
