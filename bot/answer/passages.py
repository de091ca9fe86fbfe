"""The extractive answerer: quote the passages of the top chunks that best match the question.

It needs no LLM. It picks, from each cited chunk, the blocks (paragraphs, list runs, code
blocks) that share the most distinctive words with the question, keeps them in document
order, and pulls in the code block that follows a chosen instruction, since a runbook step
is usually "do this:" followed by the command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Sequence

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


# How much a block's section (the chunk it came from) counts next to the block's own words:
# the best-ranked section of a document lends its blocks a head start, so a command
# under a heading that only paraphrases the question ("GitHub CLI" for "from the command
# line") is still quoted with the prose around it. Measured on the dev set: 0.857 -> 0.883
# context_keywords@3 (0.870 when only the top section is favoured, 0.864 without).
# Prose that shares no word with the question gets none of it: "Service degradation or
# unavailability." is short and sits in the best section, but answers nothing (measured:
# the same keywords in 4% fewer characters, which the context then spends on more blocks).
SECTION_WEIGHT = 2.0
# A block with code (a command, a file or field name) gets this much on top; measured on
# the dev set: answer_keywords 0.731 -> 0.768 at 1,148 characters.
CODE_WEIGHT = 2.0
# A question that asks for an amount ("how long", "how many", "how soon") lifts the blocks
# that state one of that kind (bot.answer.answer_type): the answer-type match of classic question
# answering. Measured on the dev set: answer_keywords +0.026, no other change (1 to 4
# give the same).
TYPE_WEIGHT = 2.0
# A question word found only inside a compound name of the block ("yaml" in
# `alertmanager.yaml`, "temporary" in `temporary_admin.yml`) counts this much of a word
# of its own, as keyword search already matches it (indexer.text.search_terms). Measured
# on the dev set: answer_keywords +0.011, context_keywords@3 +0.006 (0.25 the same; a
# full match, 1.0, lets an alert name's parts outweigh the rest: context -0.005).
PART_WEIGHT = 0.5
# A question word found only in the heading a block sits under counts this much: a block
# is about what its heading says ("Access is granted by a pull request" under "Temporary
# Production Admin access"). Measured on the dev set: answer_keywords 0.798 -> 0.808,
# context_keywords@3 0.917 -> 0.930; 0.15 to 0.35 give the same, 0.5 0.809 / 0.923, 0.75
# 0.803 / 0.925.
HEADING_WEIGHT = 0.25


def select_from_sections(
    sections: Sequence[tuple[str, int] | tuple[str, int, str]],
    question: str,
    budget: int,
    idf: dict[str, float] | None = None,
    kind: str | None = None,
    skip: Collection[str] = (),
) -> str:
    """The most relevant blocks of ``sections`` within about ``budget`` characters, kept in
    document order.

    Each section is ``(text, rank)`` or ``(text, rank, heading)``: ``rank`` 0 is the
    document's best-ranked section, ``heading`` the one its text starts under. A block
    scores its words shared with the question (weighted by ``idf``; a word found only
    inside a compound name counts ``PART_WEIGHT``, one found only in the heading the block
    sits under ``HEADING_WEIGHT``), plus its
    section's ``SECTION_WEIGHT / (1 + rank)`` when it shares any or holds code, plus
    ``CODE_WEIGHT`` for code and ``TYPE_WEIGHT`` when it states an amount of ``kind``
    (see ``bot.answer.answer_type.preferred``). Blocks in ``skip`` (already quoted from a
    near-copy of this document) are left out, unless nothing else is left.
    """
    whole = "\n\n".join(sec[0] for sec in sections)
    if skip:
        every = blocks(whole)
        new = [b for b in every if b not in skip]
        if not new:
            skip = ()  # nothing new: quote it again rather than nothing
        elif len(whole) <= budget and len(new) < len(every):
            return "\n\n".join(new).strip()
    if len(whole) <= budget:
        return whole.strip()
    bs: list[str] = []
    ranks: list[int] = []
    heads: list[str] = []
    for t, rank, *heading in sections:
        head = heading[0] if heading else ""  # the heading the section's text starts under
        for b in blocks(t):
            if _is_heading(b):
                head = b
            if b in bs or b in skip:
                continue
            bs.append(b)
            ranks.append(rank)
            heads.append(head)
    q = set(terms(question))
    weight = idf or {}

    def score(i: int) -> float:
        b = bs[i]
        words = set(terms(b))
        parts = set(search_terms(b))  # the words and the parts of compound names
        shared = sum(weight.get(w, 1.0) for w in q & words)
        shared += PART_WEIGHT * sum(weight.get(w, 1.0) for w in q & parts - words)
        under = q & set(terms(heads[i])) - parts
        shared += HEADING_WEIGHT * sum(weight.get(w, 1.0) for w in under)
        code = "`" in b  # runbook answers are mostly commands and names, marked up as code
        typed = kind is not None and supplies(kind, b)
        lift = SECTION_WEIGHT / (1 + ranks[i]) if shared or code or typed else 0.0
        lift += (CODE_WEIGHT if code else 0.0) + (TYPE_WEIGHT if typed else 0.0)
        return (shared + lift) / math.sqrt(1 + len(b) / 200)

    own = [score(i) for i in range(len(bs))]
    # A command block, or the one-line "run this:" before it, says little by itself; it
    # inherits half the relevance of the paragraph that explains it.
    scores = [
        max(own[i], 0.5 * own[i - 1]) if i > 0 and (_is_code(b) or len(b) < 120) else own[i]
        for i, b in enumerate(bs)
    ]
    order = sorted(range(len(bs)), key=lambda i: (-scores[i], i))
    chosen: set[int] = set()
    used = 0
    for i in order:
        if _is_heading(bs[i]) or (scores[i] <= 0 and chosen):
            continue
        add = {i}
        # Prose before code brings its command along, and a block ending in ":" the list
        # or steps it introduces.
        follows = i + 1 < len(bs) and not _is_code(bs[i])
        if follows and (_is_code(bs[i + 1]) or bs[i].rstrip().endswith(":")):
            add.add(i + 1)
        cost = sum(len(bs[j]) for j in add - chosen)
        if used + cost > budget and chosen:
            continue
        if used + cost > budget * 1.5:
            continue
        chosen |= add
        used += cost
        if used >= budget:
            break
    if not chosen:
        return _truncate(whole, budget)
    parts: list[str] = []
    prev = -2
    for i in sorted(chosen):
        if prev >= 0 and i != prev + 1:
            parts.append("…")
        parts.append(bs[i])
        prev = i
    return "\n\n".join(parts).strip()


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
    compound names are counted too, for ``PART_WEIGHT``."""
    n = len(texts)
    df: dict[str, int] = {}
    for t in texts:
        for w in set(search_terms(t)):
            df[w] = df.get(w, 0) + 1
    return {w: math.log(1 + n / c) for w, c in df.items()}
