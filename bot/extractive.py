"""The extractive answerer: quote the passages of the top chunks that best match the question.

It needs no LLM. It picks, from each cited chunk, the blocks (paragraphs, list runs, code
blocks) that share the most distinctive words with the question, keeps them in document
order, and pulls in the code block that follows a chosen instruction, since a runbook step
is usually "do this:" followed by the command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from indexer.chunking import clean_heading
from indexer.text import terms

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
SECTION_WEIGHT = 2.0
# A block with code (a command, a file or field name) gets this much on top; measured on
# the dev set: answer_keywords 0.731 -> 0.768 at 1,148 characters.
CODE_WEIGHT = 2.0


def select_from_sections(
    sections: Sequence[tuple[str, int]],
    question: str,
    budget: int,
    idf: dict[str, float] | None = None,
) -> str:
    """The most relevant blocks of ``sections`` within about ``budget`` characters, kept in
    document order. Each section is ``(text, rank)``: ``rank`` 0 is the document's
    best-ranked section; a block's score adds its
    section's ``SECTION_WEIGHT / (1 + rank)`` to its own word overlap with the question."""
    whole = "\n\n".join(t for t, _ in sections)
    if len(whole) <= budget:
        return whole.strip()
    bs: list[str] = []
    lift: list[float] = []
    for t, rank in sections:
        for b in blocks(t):
            if b in bs:
                continue
            bs.append(b)
            lift.append(SECTION_WEIGHT / (1 + rank))
    # Runbook answers are mostly commands and names, which docs mark up as code.
    lift = [x + (CODE_WEIGHT if "`" in b else 0.0) for x, b in zip(lift, bs, strict=True)]
    q = set(terms(question))
    weight = idf or {}

    def score(i: int) -> float:
        hits = sum(weight.get(w, 1.0) for w in q & set(terms(bs[i])))
        return (hits + lift[i]) / math.sqrt(1 + len(bs[i]) / 200)

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
    (the alert name, say) count less than the words that single out a passage."""
    n = len(texts)
    df: dict[str, int] = {}
    for t in texts:
        for w in set(terms(t)):
            df[w] = df.get(w, 0) + 1
    return {w: math.log(1 + n / c) for w, c in df.items()}
