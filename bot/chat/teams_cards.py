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
from botbuilder.schema import Activity, ActivityTypes, CardAction, Entity, SuggestedActions

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
    answer: Answer,
    *,
    escalation: str | None = None,
    feedback_buttons: bool = False,
    with_text: bool = True,
) -> dict[str, Any]:
    """The Adaptive Card of an answer: the text (unless the message carries it, as a
    streamed one does), the numbered sources, the generated/extracted line; and 👍/👎
    buttons carrying the query id when ``feedback_buttons``."""
    body: list[dict[str, Any]] = markdown_blocks(answer.text) if with_text else []
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


# -- streaming (1:1 chats) ------------------------------------------------------------------
# Teams' streaming protocol: an informative update (a typing activity, sequence 1) whose id
# names the stream, typing activities with the text so far (each holding all of the one
# before), then the final message. https://learn.microsoft.com/microsoftteams/platform/bots/streaming-ux

# A Teams AI citation's abstract is cut at 160 characters, its name at 80.
ABSTRACT_CHARS = 160
NAME_CHARS = 80


class _Entity(Entity):
    """An activity entity whose extra fields (``streamType``, ``citation``) are sent: the
    schema's Entity drops every field it does not declare."""


_Entity.enable_additional_properties_sending()


def entity(data: dict[str, Any]) -> Entity:
    """An activity entity from its JSON form."""
    e = _Entity(type=data["type"])
    e.additional_properties = {k: v for k, v in data.items() if k != "type"}
    return e


def stream_info(stream_type: str, stream_id: str | None, sequence: int | None) -> Entity:
    data: dict[str, Any] = {"type": "streaminfo", "streamType": stream_type}
    if stream_id is not None:
        data["streamId"] = stream_id
    if sequence is not None:
        data["streamSequence"] = sequence
    return entity(data)


def informative_activity(text: str) -> Activity:
    """The first update of a stream: what kbot is doing (Teams shows it as a progress bar)."""
    return Activity(
        type=ActivityTypes.typing, text=text, entities=[stream_info("informative", None, 1)]
    )


def streaming_activity(text: str, stream_id: str, sequence: int) -> Activity:
    """An update of the stream ``stream_id``: all of the answer's text so far."""
    return Activity(
        type=ActivityTypes.typing,
        text=text,
        entities=[stream_info("streaming", stream_id, sequence)],
    )


def final_activity(
    answer: Answer,
    stream_id: str | None,
    *,
    note: str | None,
    escalation: str | None,
    feedback_loop: bool,
) -> Activity:
    """The message that ends the stream ``stream_id`` (None: a message of its own): the
    answer's text, with ``note`` above it when it replaced what was streamed, its Teams AI
    citations, and a card with the sources and the feedback buttons or loop."""
    text = answer.text if note is None else f"_{note}_\n\n{answer.text}"
    card = answer_card(
        answer, escalation=escalation, feedback_buttons=not feedback_loop, with_text=False
    )
    entities = [citation_entity(answer)]
    if stream_id is not None:
        entities.insert(0, stream_info("final", stream_id, None))
    return Activity(
        type=ActivityTypes.message,
        text=text,
        text_format="markdown",
        attachments=[CardFactory.adaptive_card(card)],
        entities=entities,
        summary=_summary(answer),
        channel_data={"feedbackLoopEnabled": True} if feedback_loop else None,
    )


def citation_entity(answer: Answer) -> Entity:
    """Teams AI citations of the answer's sources (the ``[n]`` in its text open them), and
    the AI-generated label on a generated answer."""
    data: dict[str, Any] = {
        "type": "https://schema.org/Message",
        "@type": "Message",
        "@context": "https://schema.org",
        "@id": "",
        "citation": [_claim(answer, c) for c in answer.citations],
    }
    if answer.mode == "generated":
        data["additionalType"] = ["AIGeneratedContent"]
    return entity(data)


def _claim(answer: Answer, c: Citation) -> dict[str, Any]:
    appearance: dict[str, Any] = {
        "@type": "DigitalDocument",
        "name": _cut(_plain(c.title) or c.path, NAME_CHARS),
        "abstract": _cut(snippet(answer, c), ABSTRACT_CHARS),
    }
    if c.url.startswith(("https://", "http://")):
        appearance["url"] = c.url
    return {"@type": "Claim", "position": c.n, "appearance": appearance}


def snippet(answer: Answer, c: Citation) -> str:
    """The passage of ``c``'s document the answer was made from, as one line of plain text."""
    chunks = [x for x in answer.context if x.id == c.chunk_id] or [
        x for x in answer.context if (x.connector, x.doc_id) == (c.connector, c.path)
    ]
    text = chunks[0].text if chunks else c.heading or c.title
    plain = re.sub(r"[*_`#>|]+", "", re.sub(r"```[^\n]*", "", text))
    return " ".join(plain.split())


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def welcome_activity(text: str, prompts: list[str]) -> Activity:
    """The welcome, with ``prompts`` as suggested actions a user sends with one tap."""
    actions = [CardAction(type="imBack", title=_cut(p, 60), value=p) for p in prompts]
    return Activity(
        type=ActivityTypes.message,
        text=text,
        suggested_actions=SuggestedActions(actions=actions) if actions else None,
    )
