"""Procedure questions: what marks a question as asking how to do something, and the lines
that frame a quoted procedure.

Passage choice (``bot.answer.passages``) does the choosing: for such a question it reads
the best document whole, keeps each numbered list as one block with its commands, lifts
lists that share the question's words (the ``steps`` feature), quotes the list first and
cuts it only between steps. This module names what it quoted.
"""

from __future__ import annotations

import re

from indexer.chunking import clean_heading

# "how do I / how can we / how to / steps / what should I do / known fix": the question
# asks how to do something. Facts ("what is", "which", "how long", "how many") do not.
_ASKS_FOR_STEPS = re.compile(
    r"\bhow\s+(?:do|can|could|should|would|to|does\s+one)\b"
    r"|\bsteps?\b|\bprocedure\b|\bwalk\s+me\s+through\b|\bwhere\s+do\s+i\s+start\b"
    r"|\bwhat\s+(?:should|do|must|can)\s+(?:i|we)\s+(?:do|check|run|try|look)\b"
    r"|\bwhat\s+am\s+i\s+supposed\b|\bknown\s+fix\b|\bfix\s+(?:it|this|that)\b"
    r"|\btroubleshoot\w*",
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
