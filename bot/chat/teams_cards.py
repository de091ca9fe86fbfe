"""Answers as Microsoft Teams messages: an Adaptive Card with the answer, its numbered sources
and how it was made, plus the short texts the Teams bot sends.

Teams renders only a subset of Markdown in a card's TextBlock (bold, italic, lists, links):
headings become bold lines, quotes lose their marker and code blocks get a monospace block.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from botbuilder.core import CardFactory
from botbuilder.schema import Activity, ActivityTypes

from bot.answer.types import Answer, Citation

# Teams renders Adaptive Cards up to schema 1.5 on desktop, web and mobile.
CARD_VERSION = "1.5"
# The ``value`` of a 👍/👎 card button (used where Teams' own feedback loop is off).
FEEDBACK_ACTION = "kbot.feedback"

WORKING_TEXT = "Looking that up in the knowledge base…"
WELCOME_TEXT = (
    "Hi, I'm kbot. I answer questions from the team's runbooks and wikis and cite my sources. "
    "In a channel or group chat, mention me with your question (@kbot How do I rotate the "
    "API key?); in a 1:1 chat with me, just ask. Tell me with 👍/👎 whether an answer helped."
)
EMPTY_TEXT = "Ask me a question after the mention, for example: @kbot How do I rotate the API key?"
ATTACHMENTS_TEXT = (
    "I can only read the text of a message, not attachments or images. Please type your question."
)
INTERNAL_ERROR_TEXT = "Sorry, kbot hit an internal error answering this. Please try again."

# A fence may be indented (a command inside a numbered step); its lines are dedented.
_FENCE = re.compile(r"^([ \t]*)(```|~~~)[^\n]*\n(.*?)^[ \t]*\2[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_QUOTE = re.compile(r"^\s{0,3}> ?")
_BLOCK_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|#|>|\|)")
_LINKABLE = ("https://", "http://", "mailto:")


def answer_activity(answer: Answer, *, escalation: str | None, feedback_loop: bool) -> Activity:
    """The Teams message for ``answer``: its card, and Teams' feedback loop when enabled."""
    card = answer_card(answer, escalation=escalation, feedback_buttons=not feedback_loop)
    return Activity(
        type=ActivityTypes.message,
        attachments=[CardFactory.adaptive_card(card)],
        # The card is what Teams shows; the summary is what notifications and previews show.
        summary=_summary(answer),
        channel_data={"feedbackLoopEnabled": True} if feedback_loop else None,
    )


def answer_card(
    answer: Answer, *, escalation: str | None = None, feedback_buttons: bool = False
) -> dict[str, Any]:
    """The Adaptive Card of an answer: the text, the numbered sources, the generated/extracted
    line; and 👍/👎 buttons carrying the query id when ``feedback_buttons``."""
    body: list[dict[str, Any]] = markdown_blocks(answer.text)
    if answer.citations:
        label = "Closest sources" if answer.abstained else "Sources"
        body.append(_text(label, weight="Bolder", spacing="Medium"))
        for c in answer.citations:
            body += _citation_blocks(c)
    if answer.abstained and escalation:
        body.append(_text(f"Still stuck? Ask in {_plain(escalation)}.", spacing="Medium"))
    body.append(_text(_made_line(answer), isSubtle=True, size="Small", spacing="Medium"))
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    }
    if feedback_buttons:
        card["actions"] = [
            _vote_button("👍 Helpful", answer.query_id, "up"),
            _vote_button("👎 Not helpful", answer.query_id, "down"),
        ]
    return card


def markdown_blocks(text: str) -> list[dict[str, Any]]:
    """Card TextBlocks for Markdown ``text``: prose in Teams' Markdown subset, code blocks in
    a monospace font (Teams renders neither headings, quotes nor fenced code in a card)."""
    blocks: list[dict[str, Any]] = []
    pos = 0
    for m in _FENCE.finditer(text):
        blocks += _prose_block(text[pos : m.start()])
        code = _dedent(m.group(3), len(m.group(1))).rstrip("\n")
        if code.strip():
            blocks.append(_text(code, fontType="Monospace"))
        pos = m.end()
    blocks += _prose_block(text[pos:])
    return blocks


def _dedent(code: str, indent: int) -> str:
    return "\n".join(
        line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in code.split("\n")
    )


def _prose_block(text: str) -> list[dict[str, Any]]:
    paragraphs = []
    for para in re.split(r"\n\s*\n", text):
        lines = [_QUOTE.sub("", line) for line in para.strip("\n").splitlines()]
        out: list[str] = []
        for line in lines:
            heading = _HEADING.match(line)
            if heading:
                out.append(f"**{heading.group(1)}**")
            elif out and line.strip() and not _BLOCK_START.match(line):
                # A soft-wrapped line continues the one before it, as Markdown renders it.
                out[-1] = f"{out[-1].rstrip()} {line.strip()}"
            elif line.strip():
                out.append(line.rstrip())
        if out:
            paragraphs.append("\n".join(out))
    return [_text("\n\n".join(paragraphs))] if paragraphs else []


def _citation_blocks(c: Citation) -> list[dict[str, Any]]:
    title = _plain(c.title) or c.path
    # Teams opens no file:// (or other local) links, and a server path means nothing to a
    # reader: those titles stay plain text, with the connector and path below.
    link = f"[{title}]({_safe_url(c.url)})" if c.url.startswith(_LINKABLE) else title
    where = [c.connector, c.path]
    heading = _plain(c.heading)
    if heading and heading != title:
        where.append(heading)
    if c.stale:
        where.append(c.stale)
    return [
        _text(f"**[{c.n}]** {link}", spacing="Small"),
        _text(
            " · ".join(_plain(w) for w in where if w), isSubtle=True, size="Small", spacing="None"
        ),
    ]


def _made_line(answer: Answer) -> str:
    if answer.error:
        return "No answer: a service kbot depends on failed."
    if answer.abstained:
        return "No confident answer was found; these are the closest matches."
    if answer.mode == "generated":
        return "Generated by a language model from the sources above; check them before acting."
    return "Extracted word for word from the sources above."


def _summary(answer: Answer) -> str:
    first = answer.text.strip().splitlines()[0] if answer.text.strip() else ""
    return re.sub(r"[*_`#>\[\]]", "", first)[:200]


def _vote_button(title: str, query_id: str, vote: str) -> dict[str, Any]:
    return {
        "type": "Action.Submit",
        "title": title,
        "data": {"action": FEEDBACK_ACTION, "query_id": query_id, "vote": vote},
    }


def _text(text: str, **props: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **props}


def _plain(text: str) -> str:
    """``text`` safe inside a Markdown link label: brackets would end the label early."""
    return " ".join(text.replace("[", "(").replace("]", ")").split())


def _safe_url(url: str) -> str:
    """``url`` safe as a Markdown link target: spaces and parentheses would end it early."""
    return quote(url, safe=":/?#@!$&'*+,;=%~.-_")
