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
        elif _is_item(line) and cur and not _is_item(cur[0]):
            out.append("\n".join(cur))
            cur = [line]
        else:
            cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return [b for b in out if b.strip()]


# A list item's mark: "- ", "* ", "+ ", "1. " or "1) ".
_ITEM_MARK = re.compile(r"^\s*([-*+]|\d+[.)])\s+")


def _is_item(line: str) -> bool:
    return bool(_ITEM_MARK.match(line))


def _is_code(block: str) -> bool:
    return block.lstrip().startswith(("```", "~~~"))


# A block that only points elsewhere ("See [Debugging Pods](https://...)"): it names a
# page, it tells the asker nothing; the citation already links the document.
_POINTER = re.compile(
    r"\s*(?:(?:see|read|refer to|check|more (?:in|on|at)|for (?:more|details)[^\[]*)\s*:?\s*)?"
    r"\[[^\]\n]+\]\([^)\s]+\)\s*[.:]?\s*",
    re.IGNORECASE,
)


def _is_pointer(block: str) -> bool:
    return bool(_POINTER.fullmatch(block))


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
    # A numbered list with its commands, kept as one block: its steps, each with what is
    # indented or fenced under it (empty for any other block).
    steps: tuple[str, ...] = ()
    intro: str = ""  # the paragraph before a numbered list that says what it does

    def first(self, n: int) -> str:
        """A numbered list's introduction and first ``n`` steps."""
        return "\n\n".join([self.intro] * bool(self.intro) + list(self.steps[:n]))

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
    procedure: bool = False  # the question asks how to do something

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


def numbered_steps(b: Block, q: Query) -> float:
    """1 when the question asks how to do something and the block is a numbered list."""
    return 1.0 if q.procedure and b.steps else 0.0


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
    Feature(
        "steps",
        2.0,
        numbered_steps,
        "a procedure question is answered with the procedure: numbered steps. Only with "
        "evidence: a list that shares nothing with the question is not lifted",
        needs_evidence=True,
    ),
)

# A procedure question's passage may take this many characters to quote its list (the
# budget of its source, when larger); a longer list is cut between steps.
STEPS_CHARS = 1400

# A numbered list scoring under this share of the best block's score does not lead a
# how-to answer when the best block's heading names what was asked and the list's does not.
LIST_LEADS = 0.6

# Longer blocks say more by chance: the score is divided by sqrt(1 + length / LENGTH_SCALE).
# A numbered list is measured by its first STEPS_SCORED characters, as a reader reads it
# (its later steps come along when it is quoted).
STEPS_SCORED = 400
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
    n = min(len(b.text), STEPS_SCORED) if b.steps else len(b.text)
    return math.sqrt(1 + n / LENGTH_SCALE)


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
    # "unquoted" (whole, less blocks a near-copy already quoted), "cut" (nothing scored),
    # "walked" (a tutorial's sections in order, for a how-to question: ``_walk``)
    how: str = "chosen"
    left_out: str | None = None  # the steps of a list cut short ("Steps 6–7")
    steps_heading: str | None = None  # a procedure's list quoted first: its heading

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
    procedure: bool = False,
    source: int = 1,
) -> Choice:
    """The most relevant blocks of ``sections`` within about ``budget`` characters, kept in
    document order.

    Each section is ``(text, rank)`` or ``(text, rank, heading)``: ``rank`` 0 is the
    document's best-ranked section, ``heading`` the one its text starts under. Blocks are
    scored by ``features`` (default FEATURES), then chosen best first, each bringing along
    the command or list it introduces. A numbered list is one block, quoted from its first
    step and cut only between steps (``Choice.left_out`` names the rest). Blocks in
    ``skip`` (already quoted from a near-copy of this document) are left out, unless
    nothing else is left. ``procedure``: the question asks how to do something, so a
    numbered list that shares its words is quoted first.
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
    # A document that fits is quoted whole, but still scored: the lead of a fact answer is
    # taken from its blocks, and a how-to answer starts at the section that scored best.
    fits = len(whole) <= budget and not (procedure and NUMBERED_ITEM.search(whole))
    bs: list[Block] = []
    seen: set[str] = set()
    for t, rank, *heading in sections:
        head = heading[0] if heading else ""  # the heading the section's text starts under
        for b in blocks(t):
            if _is_heading(b):
                head = clean_heading(b.strip().lstrip("#"))  # as sections name it
            if b in seen or b in skip:
                continue
            seen.add(b)
            bs.append(Block(b, rank, head))
    if procedure:
        bs = group_steps(bs)
    query = Query(frozenset(terms(question)), idf or {}, kind, procedure)
    contributions = [_contributions(b, query, features) for b in bs]
    own = [sum(c.values()) / _length_norm(b) for b, c in zip(bs, contributions, strict=True)]
    scores = list(own)
    inherited: set[int] = set()
    for i in range(1, len(bs)):
        says_little = _is_code(bs[i].text) or len(bs[i].text) < SHORT_BLOCK
        if says_little and not bs[i].steps and INHERIT * own[i - 1] > own[i]:
            scores[i] = INHERIT * own[i - 1]
            inherited.add(i)
    if procedure:
        _from_first_part(bs, scores)
    texts = [b.text for b in bs]
    order = sorted(range(len(bs)), key=lambda i: (-scores[i], i))
    if fits:
        return _whole(whole, bs, contributions, scores, order, procedure)
    if procedure and not any(b.steps for b in bs):
        walked = _walk(bs, scores, order, query, max(budget, WALK_CHARS))
        if walked is not None:
            chosen_walk, left = walked
            return Choice(
                "\n\n".join(
                    [texts[i] for i in chosen_walk] + ([rest_line(left, source)] if left else [])
                ),
                bs,
                contributions,
                scores,
                chosen_walk,
                inherited,
                how="walked",
                left_out=left,
                steps_heading="",
            )
    chosen: set[int] = set()
    cut: dict[int, int] = {}  # a numbered list quoted in part: how many steps
    used = 0
    # A procedure's list leads the answer, with room for its steps, unless a block that
    # outscores it well sits under a heading that names what was asked and the list's
    # does not: asked how to roll back, the *Rolling back* section is the answer, not
    # the numbered deploy steps of the same page.
    best = next((i for i in order if not _is_heading(texts[i])), None)

    def list_leads(j: int) -> bool:
        if best is None or scores[j] >= LIST_LEADS * scores[best]:
            return True
        return not (heading_words(bs[best], query) > 0 and heading_words(bs[j], query) == 0)

    for i in order:
        if _is_heading(texts[i]) or _is_pointer(texts[i]) or (scores[i] <= 0 and chosen):
            continue
        add = {i}
        # Prose before code brings its command along, and a block ending in ":" the list
        # or steps it introduces.
        follows = i + 1 < len(bs) and not _is_code(texts[i])
        if follows and (_is_code(texts[i + 1]) or texts[i].rstrip().endswith(":")):
            add.add(i + 1)
        cost = sum(len(texts[j]) for j in add - chosen)
        limit = budget if chosen else budget * OVERSHOOT
        steps = next((j for j in sorted(add - chosen) if bs[j].steps), None)
        cuts: dict[int, int] = {}
        lead_list = procedure and steps is not None and not cut and list_leads(steps)
        if lead_list:
            limit = max(limit, used + STEPS_CHARS)
        if used + cost > limit and lead_list:
            # Cut the procedure between steps: as many as fit, the first one always.
            assert steps is not None
            # The list's introduction is quoted with it, so it takes room too.
            intro = len(bs[steps].intro) + 2 if bs[steps].intro else 0
            room = limit - used - (cost - len(texts[steps])) - intro
            kept = _steps_within(bs[steps].steps, room)
            if kept < len(bs[steps].steps):
                cuts = {steps: kept}
                cost -= len(texts[steps]) - len(bs[steps].first(kept))
        if used + cost > limit:
            continue  # and nothing is cut: the list is not quoted
        cut.update(cuts)
        chosen |= add
        used += cost
        if used >= budget or cut:
            break  # a procedure cut short is all the answer needs
    if not chosen:
        return Choice(_truncate(whole, budget), how="cut")
    steps_lead = next((i for i in order if i in chosen and bs[i].steps and list_leads(i)), None)
    lead = steps_lead
    if lead is None and procedure:
        # No list: the best block first all the same (measured: facts read better in
        # document order, answers to "how do I" with the step that scored best).
        lead = next(i for i in order if i in chosen)
        lead = _lead_section(bs, texts, lead, chosen, order, budget)
    parts: list[str] = []
    left_out = None
    prev = -2
    ordered = sorted(chosen)
    if lead is not None:
        # The steps first; what explains them (chosen before them in the document) after.
        first = [j for j in ordered if j >= lead and all(k in chosen for k in range(lead, j))]
        ordered = first + [j for j in ordered if j not in first]
    for i in ordered:
        if prev >= 0 and i != prev + 1:
            parts.append("…")
        text = texts[i]
        if i in cut:
            text = bs[i].first(cut[i])
            left_out = _left_out(bs, i, cut[i])
            text += "\n\n" + rest_line(left_out, source)
        parts.append(text)
        prev = i
    steps_heading = bs[steps_lead].heading if steps_lead is not None else None
    return Choice(
        "\n\n".join(parts).strip(),
        bs,
        contributions,
        scores,
        sorted(chosen),
        inherited,
        left_out=left_out,
        steps_heading=steps_heading,
    )


def _whole(
    whole: str,
    bs: list[Block],
    contributions: list[dict[str, float]],
    scores: list[float],
    order: list[int],
    procedure: bool,
) -> Choice:
    """A document quoted whole. A how-to answer begins at the section of its best block
    (the diagnosis, say, before the alert's meaning and impact); the sections before it
    follow, after a "…"."""
    every = list(range(len(bs)))
    best = _best_block(bs, scores, order)
    if not procedure or best is None:
        return Choice(whole.strip(), bs, contributions, scores, every, how="whole")
    start, _ = _section_bounds(bs, best)
    if start == 0 or not _is_heading(bs[start].text):
        # The best block is not in a section of its own: the document as it is.
        return Choice(whole.strip(), bs, contributions, scores, every, how="whole")
    # The document's title heading is not moved along: the citation names it.
    head = [i for i in range(start) if not (i == 0 and _is_heading(bs[0].text))]
    if not head:  # the best section is the first one
        return Choice(whole.strip(), bs, contributions, scores, every, how="whole")
    parts = [bs[i].text for i in range(start, len(bs))] + ["…"] + [bs[i].text for i in head]
    return Choice("\n\n".join(parts).strip(), bs, contributions, scores, every, how="whole")


# A tutorial's steps are its sections: at least this many, in document order, from the
# first that holds a command.
WALK_SECTIONS = 2
# What a walked tutorial may quote, its sections' first commands first.
WALK_CHARS = 1100


def _walk(
    bs: list[Block],
    scores: list[float],
    order: list[int],
    query: Query,
    room: int,
) -> tuple[list[int], str | None] | None:
    """A how-to answer from a document that writes its procedure as sections in order (a
    tutorial: *Hashing a password*, *Creating web.yml*, *Launching Prometheus*), not as a
    numbered list: its sections from the first that holds a command, each with its
    heading and its first command (with the sentence that introduces it), then, as room
    allows, each section's best-scoring blocks; cut at a section boundary. None when the
    best block's heading names what was asked (that section is the answer), or the
    document has fewer than WALK_SECTIONS such sections. Returns the chosen indexes in
    document order and the sections left out ("*Testing* and *Summary*")."""
    best = _best_block(bs, scores, order)
    if best is None or heading_words(bs[best], query) > 0:
        return None
    runs: list[tuple[int, int]] = []  # each section's first and last index, in order
    i = 0
    while i < len(bs):
        start, end = _section_bounds(bs, i)
        # The title's run (an H1 and what follows it) is the introduction, not a step.
        if _is_heading(bs[start].text) and not bs[start].text.lstrip().startswith("# "):
            runs.append((start, end))
        i = end + 1
    # A section with no command (a summary, the supported versions) is not a step.
    runs = [(a, b) for a, b in runs if _has_fence(bs, a, b)]
    if len(runs) < WALK_SECTIONS:
        return None
    # Steps are named as actions (*Creating web.yml*, *Install the agent*); a runbook's
    # *Diagnosis* and *Mitigation*, or *DEB installation* beside *RPM installation*, are
    # parts to choose from, answered by the section that scores best.
    actions = sum(names_action(bs[a].heading) for a, _ in runs)
    if 2 * actions < len(runs):
        return None
    if best < runs[0][0]:
        return None  # the best block is before the procedure: not a tutorial's answer
    chosen: set[int] = set()
    used = 0
    walked = 0
    for a, b in runs:
        unit = [a] + _first_command(bs, a, b)
        cost = sum(len(bs[k].text) for k in unit)
        if walked and used + cost > room:
            break
        chosen.update(unit)
        used += cost
        walked += 1
    if walked < WALK_SECTIONS:
        return None
    # Then the walked sections' best blocks, as room allows: only theirs, since a block of
    # a section the walk skipped (one with no command) would be quoted without its heading.
    section = {k: (a, b) for a, b in runs[:walked] for k in range(a, b + 1)}
    for k in order:
        if k in chosen or k not in section or scores[k] <= 0:
            continue
        if _is_heading(bs[k].text) or _is_pointer(bs[k].text):
            continue
        add = _with_command(bs, k, *section[k])
        cost = sum(len(bs[j].text) for j in add if j not in chosen)
        if used + cost <= room:
            chosen.update(add)
            used += cost
    left = [clean_heading(bs[a].text.strip().lstrip("#")) for a, _ in runs[walked:]]
    return sorted(chosen), _sections_left(left)


# Imperatives a procedure's headings start with ("Install the agent", "Check the logs").
_ACTIONS = (
    "add apply build change check configure connect copy create define delete deploy "
    "disable download edit enable export fetch generate get import initialize install "
    "launch log make migrate move open prepare point register reload remove rename "
    "replace restart restore retrieve rotate run scale send set start stop take test "
    "try turn update upgrade upload use verify view wait write"
)
_ACTION_VERBS = frozenset(_ACTIONS.split())
# Words in -ing that name a thing, not an action ("Meaning", "Logging" the signal).
_THINGS = (
    "meaning logging monitoring understanding naming troubleshooting warning warnings "
    "string thing something nothing everything pricing tracing sampling batching during "
    "pending missing existing following remaining incoming outgoing recording routing "
    "scheduling networking caching"
)
_NOT_ACTIONS = frozenset(_THINGS.split())
_LEADING_NUMBER = re.compile(r"^(?:step\s*)?\d{1,2}[.):]?\s+", re.IGNORECASE)
_HOW_TO = re.compile(r"^how\s+to:?\s+", re.IGNORECASE)


def names_action(heading: str) -> bool:
    """Whether ``heading`` names a step to take: it starts with an imperative or a verb in
    -ing ("Hashing a password", "2. Update the token", "How to: Export a CSV")."""
    text = heading.strip()
    if _HOW_TO.match(text):
        return True  # "How to: ..." names what to do
    words = _LEADING_NUMBER.sub("", text).split()
    if not words:
        return False
    first = words[0].strip("*`:,.").casefold()
    if first in _ACTION_VERBS:
        return True
    return first.endswith("ing") and len(first) > 5 and first not in _NOT_ACTIONS


def _has_fence(bs: list[Block], a: int, b: int) -> bool:
    return any(_is_code(bs[k].text) for k in range(a, b + 1))


def _first_command(bs: list[Block], a: int, b: int) -> list[int]:
    """The first command block of the section ``a``..``b`` (it has one), with the paragraph
    before it that introduces it."""
    return _with_command(bs, next(k for k in range(a + 1, b + 1) if _is_code(bs[k].text)), a, b)


def _with_command(bs: list[Block], k: int, a: int, b: int) -> list[int]:
    """Block ``k`` of the section ``a``..``b`` as a walked tutorial quotes it: a command
    with the paragraph before it that introduces it, a paragraph with the command after
    it, anything else alone."""
    if _is_code(bs[k].text):
        before = k - 1
        if before > a and not _is_code(bs[before].text) and not _is_pointer(bs[before].text):
            return [before, k]
        return [k]
    if k + 1 <= b and _is_code(bs[k + 1].text):
        return [k, k + 1]
    return [k]


def _sections_left(headings: list[str]) -> str | None:
    """ "*Testing* and *Summary*": the sections a walked tutorial leaves to its source."""
    names = [f"*{h}*" for h in headings if h]
    if not names:
        return None
    if len(names) == 1:
        return f"Section {names[0]}"
    return "Sections " + ", ".join(names[:-1]) + " and " + names[-1]


def _best_block(bs: list[Block], scores: list[float], order: list[int]) -> int | None:
    """The best-scoring block that is not a heading, if any scored."""
    return next((i for i in order if scores[i] > 0 and not _is_heading(bs[i].text)), None)


def _section_bounds(bs: list[Block], i: int) -> tuple[int, int]:
    """The first and last index of the run of blocks under ``bs[i]``'s heading."""
    start = end = i
    while start > 0 and bs[start - 1].heading == bs[i].heading:
        start -= 1
    while end + 1 < len(bs) and bs[end + 1].heading == bs[i].heading:
        end += 1
    return start, end


def _lead_section(
    bs: list[Block], texts: list[str], best: int, chosen: set[int], order: list[int], budget: int
) -> int:
    """A how-to answer with no list to quote leads with the whole section of its best
    block, from its first paragraph, when it fits ``STEPS_CHARS``: a section's bullets and
    commands read as one procedure, not as quotes with "…" between them. Other blocks stay
    chosen while the answer keeps within ``budget`` times ``OVERSHOOT``. Returns where the
    answer starts."""
    start, end = _section_bounds(bs, best)
    section = [
        k for k in range(start, end + 1) if not _is_heading(texts[k]) and not _is_pointer(texts[k])
    ]
    size = sum(len(texts[k]) for k in section)
    if not section or size > STEPS_CHARS:
        return best
    kept = set(section)
    used = size
    for i in order:
        if i in chosen and i not in kept and used + len(texts[i]) <= budget * OVERSHOOT:
            kept.add(i)
            used += len(texts[i])
    chosen.clear()
    chosen.update(kept)
    return section[0]


NUMBERED_ITEM = re.compile(r"^[ \t]*\d+[.)][ \t]+", re.MULTILINE)


_PART = re.compile(r"^(?:step\s+(\d{1,2})[.):]?|(\d{1,2})[.):])\s+\S", re.IGNORECASE)


def _part(heading: str) -> int | None:
    """The number of a procedure's part its heading names ("2. Update the token", "Step
    3: Verify"), if it names one."""
    m = _PART.match(heading.strip()) if heading else None
    return int(m.group(1) or m.group(2)) if m else None


def _from_first_part(bs: list[Block], scores: list[float]) -> None:
    """A procedure written as numbered parts, each with its steps ("### 1. Issue a new
    token", "### 2. Update the token"), is begun at its first part: when the best list
    sits under part 2 or later, the list of part 1 before it is scored as high, and
    quoted first (document order breaks the tie)."""
    lists = [i for i, b in enumerate(bs) if b.steps and _part(b.heading) is not None]
    if not lists:
        return
    best = max(lists, key=lambda i: (scores[i], -i))
    if (_part(bs[best].heading) or 0) <= 1:
        return
    first = next((i for i in lists if i < best and _part(bs[i].heading) == 1), None)
    if first is not None:
        scores[first] = max(scores[first], scores[best])


def group_steps(bs: list[Block]) -> list[Block]:
    """Join each numbered list of two or more steps into one block, with the commands and
    indented text between its items: a runbook's procedure is one unit to quote."""
    out: list[Block] = []
    i = 0
    while i < len(bs):
        b = bs[i]
        if not _starts_step(b.text):
            out.append(b)
            i += 1
            continue
        j = i + 1
        while j < len(bs) and bs[j].heading == b.heading:
            t = bs[j].text
            # The next step, a nested one, a command, or text indented under a step.
            if NUMBERED_ITEM.match(t) or _is_code(t) or t[:1] in (" ", "\t"):
                j += 1
            else:
                break
        while j > i + 1 and not _starts_step(bs[j - 1].text) and not _is_code(bs[j - 1].text):
            j -= 1
        steps = _split_steps([x.text for x in bs[i:j]])
        if len(steps) < 2:
            out.append(b)
            i += 1
            continue
        # The paragraph that introduces the list is scored and quoted with it.
        intro = ""
        if out and _is_intro(out[-1], b):
            intro = out.pop().text
        text = "\n\n".join([intro] * bool(intro) + [x.text for x in bs[i:j]])
        out.append(Block(text, b.rank, b.heading, steps, intro))
        i = j
    return out


def _is_intro(before: Block, first: Block) -> bool:
    """Whether ``before`` is a short paragraph introducing the list that starts at
    ``first``, under the same heading."""
    t = before.text
    return (
        before.heading == first.heading
        and not before.steps
        and not _is_code(t)
        and not _is_heading(t)
        and not _is_item(t.lstrip().split("\n", 1)[0])
        and len(t) <= INTRO_CHARS
    )


# The longest paragraph read as the introduction of the list after it.
INTRO_CHARS = 300


def _starts_step(text: str) -> bool:
    """A block that starts a list's item at the top level (a nested list, indented under
    an item, belongs to that item)."""
    m = NUMBERED_ITEM.match(text)
    return bool(m) and len(text) - len(text.lstrip()) < 4


def _split_steps(parts: list[str]) -> tuple[str, ...]:
    """The steps of a list's blocks: each numbered item at the list's indentation, with
    everything up to the next one."""
    base = len(parts[0]) - len(parts[0].lstrip())
    steps: list[list[str]] = []
    for part in parts:
        lines: list[str] = []
        for line in part.split("\n"):
            m = NUMBERED_ITEM.match(line)
            indent = len(line) - len(line.lstrip())
            if m and indent <= base and not (lines and _open_fence(lines)):
                if lines:
                    _append(steps, lines)
                lines = [line]
                steps.append([])
            else:
                lines.append(line)
        _append(steps, lines)
    return tuple(t for t in ("\n".join(s).strip("\n") for s in steps) if t.strip())


def _append(steps: list[list[str]], lines: list[str]) -> None:
    if not steps:
        steps.append([])
    if steps[-1]:
        steps[-1].append("")
    steps[-1].extend(lines)


def _open_fence(lines: list[str]) -> bool:
    return sum(1 for ln in lines if ln.lstrip().startswith(("```", "~~~"))) % 2 == 1


def _steps_within(steps: Sequence[str], room: float) -> int:
    """How many leading steps fit in ``room`` characters (at least one)."""
    used, n = 0, 0
    for step in steps:
        used += len(step) + 2
        if n and used > room:
            break
        n += 1
    return n


# A label a paragraph after a list often starts with ("**Rollback:** if ..."), named when
# the list is cut before it.
_LABEL = re.compile(r"^\*\*([^*\n]{2,40}?):?\*\*")


def rest_line(left_out: str, n: int) -> str:
    """The line after a procedure cut short: "Steps 6–7 and the rollback are in [1]."."""
    one = left_out.startswith(("Step ", "Section ")) and " and " not in left_out
    return f"{left_out} {'is' if one else 'are'} in [{n}]."


def _left_out(bs: list[Block], i: int, kept: int) -> str:
    """What a cut list leaves to its source: "Steps 6–7 and the rollback"."""
    # Counted, not read: Markdown shows "1. 1. 1." as 1, 2, 3, and so do the chats.
    first, last = kept + 1, len(bs[i].steps)
    what = f"Step {first}" if first == last else f"Steps {first}–{last}"
    after = bs[i + 1] if i + 1 < len(bs) else None
    label = _LABEL.match(after.text.strip()) if after and after.heading == bs[i].heading else None
    if label:
        return f"{what} and the {label.group(1).strip().lower()}"
    return what


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


# -- the lead: the sentences that state the answer, before the quotes --------------------

# A fact question's answer starts with its best sentences: at most LEAD_SENTENCES of them,
# in LEAD_CHARS characters, none shorter than LEAD_MIN_CHARS (a fragment says nothing).
LEAD_CHARS = 320
LEAD_SENTENCES = 2
LEAD_MIN_CHARS = 40
# A sentence ends at ". " (or "! ", "? ") before a capital, a mark or a quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*\[(\"'])")
_TABLE_LINE = re.compile(r"^\s*\|")
_QUOTE_MARK = re.compile(r"^\s*(?:>\s?)+")


def sentences(block: str) -> list[str]:
    """The sentences of a prose block, or the items of a list (one line each); none of a
    code block, heading or table."""
    if _is_code(block) or _is_heading(block) or _TABLE_LINE.match(block):
        return []
    if _is_item(block.lstrip().split("\n", 1)[0]):
        items: list[str] = []
        for line in block.split("\n"):
            if _is_item(line):
                items.append(_ITEM_MARK.sub("", line, count=1).strip())
            elif items and line.strip():
                items[-1] += " " + line.strip()
        return [i for i in items if i]
    # A quotation's marks ("> ") are not part of what it says.
    text = " ".join(" ".join(_QUOTE_MARK.sub("", ln) for ln in block.split("\n")).split())
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def lead(
    chosen: Sequence[tuple[int, Choice]],
    question: str,
    idf: dict[str, float] | None = None,
    kind: str | None = None,
    budget: int = LEAD_CHARS,
) -> list[tuple[str, int]]:
    """The sentences that best answer ``question`` among the blocks quoted from each source
    (``(n, choice)``), best first within ``budget`` characters, each with its source's
    number; scored by the passage model's features, as blocks are."""
    query = Query(frozenset(terms(question)), idf or {}, kind)
    scored: list[tuple[float, int, int, str]] = []
    for n, choice in chosen:
        for i in choice.chosen:
            b = choice.blocks[i]
            for s in sentences(b.text):
                if len(s) < LEAD_MIN_CHARS:
                    continue  # a fragment ("a local emergency") says nothing alone
                unit = Block(s, b.rank, b.heading)
                c = _contributions(unit, query, FEATURES)
                score = sum(c.values()) / _length_norm(unit)
                if score > 0:
                    scored.append((score, n, len(scored), s))
    out: list[tuple[str, int]] = []
    used = 0
    taken: set[str] = set()
    for _score, n, _, s in sorted(scored, key=lambda x: (-x[0], x[1], x[2])):
        if len(out) == LEAD_SENTENCES:
            break
        same = _comparable(s)
        if same in taken or any(same in t or t in same for t in taken):
            continue  # said already (a near-copy of the runbook, or its own list)
        if used + len(s) > budget and out:
            continue
        if used + len(s) > budget * OVERSHOOT:
            continue
        out.append((s, n))
        taken.add(same)
        used += len(s) + 1
    return out


_BULLET = re.compile(r"^\s*[-*+]\s+")


def _without_items(block: str, said: set[str]) -> str:
    """A bulleted list ``block`` less its items whose text (``_comparable``) is in
    ``said``; each item keeps the lines that continue it."""
    items: list[list[str]] = []
    for line in block.split("\n"):
        if _BULLET.match(line) or not items:
            items.append([line])
        else:
            items[-1].append(line)
    kept = [i for i in items if _comparable(" ".join(ln.strip() for ln in i)) not in said]
    return "\n".join(ln for i in kept for ln in i)


def _comparable(text: str) -> str:
    """``text`` as compared for saying the same thing: case, spacing, list marks and
    typographic quotes aside."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    text = text.replace("\u201d", '"')
    return " ".join(_ITEM_MARK.sub("", ln) for ln in text.casefold().split("\n")).strip()


def without(passage: str, said: Collection[str]) -> str:
    """``passage`` less the paragraphs a lead already says word for word, and the "…"
    marks their going leaves doubled or at an end."""
    said = {" ".join(s.split()) for s in said}
    items_said = {_comparable(s) for s in said}
    kept = []
    for b in passage.split("\n\n"):
        if " ".join(b.split()) in said:
            continue
        if _BULLET.match(b.lstrip().split("\n", 1)[0]):
            # A bulleted list loses the items the lead says (a numbered one stays whole:
            # its numbers are its steps').
            b = _without_items(b, items_said)
            if not b:
                continue
        if not (_is_code(b) or _is_heading(b) or _is_item(b.lstrip().split("\n", 1)[0])):
            # A paragraph the lead quoted a sentence of keeps only its other sentences.
            ss = sentences(b)
            rest = [x for x in ss if x not in said]
            if ss and not rest:
                continue
            if len(rest) < len(ss):
                b = " ".join(rest)
        kept.append(b)
    out: list[str] = []
    for b in kept:
        if b.strip() == "…" and (not out or out[-1].strip() == "…"):
            continue
        out.append(b)
    while out and out[-1].strip() == "…":
        out.pop()
    return "\n\n".join(out)
