"""The kind of answer a question expects, and whether a passage can supply one.

A question that asks for a quantity ("how much are we paid for...", "how long are pages
cached", "how many replicas...") is answered only by a passage that states one. When the
closest documents share the question's topic but state no amount of that kind, they do
not answer it: the bot says so instead of quoting a neighbouring paragraph.

The checks are deliberately coarse (a currency amount, a duration, any number): they only
have to tell "no amount of this kind anywhere in the evidence" from "there is one".
"""

from __future__ import annotations

import re

MONEY = "money"
DURATION = "duration"
NUMBER = "number"

# Words that make "how much" a question about money rather than about memory or disk.
_MONEY_WORDS = re.compile(
    r"\b(pay|paid|salary|salaries|wage|cost|costs|price|priced|spend|budget|allowance|"
    r"bonus|compensat\w*|reimburs\w*|expenses?|fee|fees|stipend)\b",
    re.IGNORECASE,
)
_HOW_MUCH = re.compile(r"\bhow\s+much\b", re.IGNORECASE)
_HOW_LONG = re.compile(r"\bhow\s+long\b", re.IGNORECASE)
# Usually a time too, but not always one ("how fast is the disk filling up"): preferred in
# passage choice, never demanded.
_HOW_SOON = re.compile(r"\bhow\s+(?:soon|quickly|fast|often)\b", re.IGNORECASE)
_HOW_MANY = re.compile(r"\bhow\s+many\b", re.IGNORECASE)

_CURRENCY = re.compile(
    r"[£$€¥₹]\s?\d|\d\s?(?:[£$€]|(?:usd|eur|gbp|dollars?|pounds?|euros?)\b)"
    r"|\b(?:usd|eur|gbp)\s?\d",
    re.IGNORECASE,
)
_UNITS = (
    r"ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?|"
    r"months?|y|yrs?|years?"
)
_DURATION = re.compile(
    rf"\b\d+(?:\.\d+)?\s?(?:{_UNITS})\b"
    r"|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|"
    r"a|an|half an?)\s+(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b"
    r"|\b(?:hourly|daily|weekly|monthly|nightly|yearly|annually)\b"
    r"|\bmax-age=\d+",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
    r"hundred|thousand|dozen|single|double)\b",
    re.IGNORECASE,
)


def expected(question: str) -> str | None:
    """The kind of amount ``question`` asks for, or None when it asks for none."""
    if _HOW_MUCH.search(question):
        return MONEY if _MONEY_WORDS.search(question) else NUMBER
    if _HOW_LONG.search(question):
        return DURATION
    if _HOW_MANY.search(question):
        return NUMBER
    return None


def preferred(question: str) -> str | None:
    """The kind of amount an answer to ``question`` most likely states: what ``expected``
    demands, or a duration for "how soon / quickly / fast / often". Passages that state
    one are favoured when quoting; only ``expected`` decides to abstain."""
    kind = expected(question)
    if kind is None and _HOW_SOON.search(question):
        return DURATION
    return kind


def supplies(kind: str, text: str) -> bool:
    """Whether ``text`` states an amount of ``kind``."""
    pattern = {MONEY: _CURRENCY, DURATION: _DURATION, NUMBER: _NUMBER}[kind]
    return bool(pattern.search(text))


DESCRIPTIONS = {MONEY: "an amount of money", DURATION: "a duration", NUMBER: "a number"}
