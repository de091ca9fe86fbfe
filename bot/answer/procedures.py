"""Procedure questions: what marks a question as asking how to do something, and the lines
that frame a quoted procedure.

Passage choice (``bot.answer.passages``) does the choosing: for such a question it reads
the best document whole, keeps each numbered list as one block with its commands, lifts
lists that share the question's words (the ``steps`` feature), quotes the list first and
cuts it only between steps. This module names what it quoted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.answer.passages import NUMBERED_ITEM
from indexer.chunking import clean_heading
from indexer.text import search_terms, terms

# "how do I / how can we / how to / steps / what should I do / known fix": the question
# asks how to do something. Facts ("what is", "which", "how long", "how many") do not.
_ASKS_FOR_STEPS = re.compile(
    r"\bhow\s+(?:do|can|could|should|would|to|does\s+one)\b"
    r"|\bsteps?\b|\bprocedure\b|\bwalk\s+me\s+through\b|\bwhere\s+do\s+i\s+start\b"
    r"|\bwhat\s+(?:should|do|must|can)\s+(?:i|we)\s+(?:do|check|run|try|look)\b"
    r"|\bwhat\s+am\s+i\s+supposed\b|\bknown\s+fix\b|\bfix\s+(?:it|this|that)\b"
    r"|\btroubleshoot\w*|\bprocess\s+(?:to|for)\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^\d+(?:\.\d+)*[.)]?\s+")
# A heading of at most this many words reads as a name: "Mitigation steps".
SHORT_HEADING = 4
_NAMES_STEPS = re.compile(r"\bsteps?\b|\bhow\s+to\b|\bprocedure\b", re.IGNORECASE)


def asks_for_steps(question: str) -> bool:
    """Whether ``question`` asks how to do something."""
    return bool(_ASKS_FOR_STEPS.search(question))


def preface(heading: str, title: str, n: int) -> str:
    """The line before a quoted procedure: "Mitigation steps, from **Title** [1]:"."""
    heading = _NUMBER.sub("", clean_heading(heading.lstrip("#").strip()))
    if not heading or heading.casefold() == title.casefold():
        return f"Steps from **{title}** [{n}]:"
    if len(heading.split()) > SHORT_HEADING:
        return f"Steps from **{title} › {heading}** [{n}]:"
    what = heading if _NAMES_STEPS.search(heading) else f"{heading} steps"
    return f"{what}, from **{title}** [{n}]:"


# A word the closest documents use this often, or in a heading, list item or command, is
# explained there; fewer mentions, in prose only, are "in passing".
PASSING_MENTIONS = 1
# Question words in more than this share of the retrieved chunks name the topic they share.
TOPIC_SHARE = 0.5
_FENCE_LINE = re.compile(r"^\s*(```|~~~)")
_STRUCTURE_LINE = re.compile(r"^\s*(#{1,6}\s|[-*+]\s|\d+[.)]\s)")


# A title holding this share of a question's content words (and at least two of them) is
# the question's subject: "How do I fix Postgres replica lag?" and *Postgres replica lag*.
ABOUT_SHARE = 0.6


def names_subject(question: str, title: str) -> float:
    """The share of ``question``'s content words that ``title`` holds; 0.0 when the
    question has fewer than two (one word names no subject on its own)."""
    asked = set(terms(question))
    if len(asked) < 2:
        return 0.0
    return len(asked & set(search_terms(title))) / len(asked)


def only_in_passing(
    question: str,
    titles: Sequence[str],
    retrieved: Sequence[str],
    cited: Sequence[Sequence[str]],
    first_title: str = "",
) -> list[str]:
    """What a how-to ``question`` asks about, when the ``cited`` documents (each a list of
    chunk texts) only mention it in passing: never in a heading, list item or command, and
    at most PASSING_MENTIONS times.

    What it asks about is each of its words that the ``retrieved`` chunks use, less the
    topic they share: words of a retrieved document's title ("Alertmanager") and words in
    more than TOPIC_SHARE of the chunks. Empty when any of them is explained somewhere
    (the documents answer at least part of it), when none is used at all (a
    paraphrase is judged by meaning, not words), and when the first cited document's
    ``first_title`` names the question's subject and that document holds a procedure:
    then the words left over ("fix", "returning") ask for its steps, not for a topic of
    their own."""
    asked = {stem_of: word for word in _WORD.findall(question) for stem_of in terms(word)}
    if not retrieved:
        return []
    topic = {w for t in titles for w in search_terms(t)}
    chunk_words = [set(terms(t)) for t in retrieved]
    share = {w: sum(w in ws for ws in chunk_words) / len(retrieved) for w in asked}
    focus = [w for w in asked if w not in topic and 0 < share[w] <= TOPIC_SHARE]
    counts = [_mentions(w, texts) for w in focus for texts in cited]
    if not focus or any(explained for _, explained in counts):
        return []
    if not sum(n for n, _ in counts):
        return []
    if names_subject(question, first_title) >= ABOUT_SHARE and cited and _has_procedure(cited[0]):
        return []
    return [asked[w] for w in focus]


def _has_procedure(texts: Sequence[str]) -> bool:
    """Whether a document's chunks hold a numbered list or a command block."""
    text = "\n".join(texts)
    return bool(NUMBERED_ITEM.search(text)) or any(
        _FENCE_LINE.match(line) for line in text.split("\n")
    )


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")


def _mentions(word: str, texts: Sequence[str]) -> tuple[int, bool]:
    """How often a document's chunks use ``word`` (a stem), and whether it is explained."""
    n = 0
    fence = False
    for line in "\n".join(texts).split("\n"):
        if _FENCE_LINE.match(line):
            fence = not fence
            continue
        found = terms(line).count(word)
        if not found:
            continue
        if fence or _STRUCTURE_LINE.match(line):
            return n + found, True
        n += found
    return n, n > PASSING_MENTIONS


def not_covered(words: Sequence[str], titles: Sequence[str]) -> str:
    """The honest answer to a how-to question the closest documents mention only in passing."""
    named = ", ".join(f"*{w}*" for w in words)
    cover = "; ".join(f"**{t}**" for t in titles)
    return (
        f"The closest sources mention {named} but don't explain how to do it, so I can't "
        f"answer this from the knowledge base. They cover: {cover}. They are below in case "
        "they help."
    )
