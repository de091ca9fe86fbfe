"""How the report's values read to people, in every format that shows them: rates, money,
times, and user text made inert in Markdown. HTML needs no such helper: its templates
escape everything they print."""

from __future__ import annotations

import re
from typing import Any

from bot.review.cost import DAYS_PER_MONTH

ANSWER_PREVIEW_CHARS = 600


def pct(rate: float | None) -> str:
    """A rate in 0..1 as a whole percentage, ``-`` when there was nothing to rate."""
    return "-" if rate is None else f"{rate * 100:.0f}%"


def ms(v: float | None) -> str:
    """Milliseconds, whole, ``-`` when nothing was measured."""
    return "-" if v is None else f"{v:.0f}"


def usd(v: float) -> str:
    """Dollars: four decimals under a dollar, cents above."""
    return f"${v:.4f}" if v < 1 else f"${v:,.2f}"


def short(v: float) -> str:
    """A chart's number: whole from 10 up or when whole, else one decimal."""
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def when(iso: str) -> str:
    """An ISO timestamp as people read it: ``2024-05-01 14:03`` (UTC)."""
    return iso[:16].replace("T", " ")


def changed(doc: dict[str, Any]) -> str:
    """When a cited document last changed at its source, or that it is gone."""
    if not doc["in_index"]:
        return "no longer in the index"
    return f"{doc['last_modified'][:10]} ({doc['age_days']} days ago)"


def preview(answer: str) -> str:
    """An answer cut to ``ANSWER_PREVIEW_CHARS``."""
    return answer if len(answer) <= ANSWER_PREVIEW_CHARS else answer[:ANSWER_PREVIEW_CHARS] + "…"


def is_http(url: str | None) -> bool:
    """Whether ``url`` may be a link: only http(s), never ``javascript:`` or a bare path."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


def redaction_note(mode: str) -> str:
    """The sentence that says what ``reports.redact`` hid ("" when nothing)."""
    return {
        "none": "",
        "hash": " Question text and user ids are replaced by stable hashes.",
        "redact": " Question text and user ids are redacted.",
    }[mode]


def cost_line(report: dict[str, Any]) -> str:
    """The period's model calls, tokens and cost, and the month they project to."""
    t = report["tokens"]
    if not t["model_calls"]:
        return "No model calls in this period: every answer was extractive, at no token cost."
    line = (
        f"{t['model_calls']} model calls used {t['input']} input tokens ({t['cached']} cached) "
        f"and {t['output']} output tokens, costing {usd(report['cost_usd'])}: about "
        f"{usd(report['projected_monthly_cost_usd'])} per {DAYS_PER_MONTH}-day month at "
        "this period's daily rate."
    )
    if t["unpriced_calls"]:
        line += f" {t['unpriced_calls']} calls were to a model without a known price."
    return line


def md(text: Any) -> str:
    """User or document text made inert in Markdown: one line, no markup, no HTML, no links."""
    flat = " ".join(str(text).split())
    return re.sub(r"([\\`*_\[\]<>|#!])", r"\\\1", flat)


def md_link(label: str, url: str) -> str:
    """A Markdown link when ``url`` is http(s), else the label alone; the label is inert."""
    return f"[{md(label)}]({url})" if is_http(url) else md(label)


def fenced(text: str) -> str:
    """``text`` verbatim in a fenced block, its fence longer than any backtick run inside."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"
