"""Block Kit for Slack: an ``Answer`` as messages, the feedback note, the 👎 reason modal.

Pure functions over plain dicts (Slack's JSON), so rendering is tested without Slack.
"""

from __future__ import annotations

import json
import re
from typing import Any

from slack_sdk.models.blocks import (
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
)

from bot.answer.types import Answer

Block = dict[str, Any]

# Slack's documented limits: a section's text and the blocks of one message.
MAX_SECTION_CHARS = 3000
MAX_BLOCKS = 50
# Notification and screen-reader text of a message; the blocks carry the full answer.
FALLBACK_CHARS = 300

FEEDBACK_BLOCK = "kbot_feedback"
THANKS_BLOCK = "kbot_feedback_thanks"
VOTE_UP = "kbot_vote_up"
VOTE_DOWN = "kbot_vote_down"
# Slack's feedback buttons (assistant replies): one action, the vote in the value.
FEEDBACK_ACTION = "kbot_feedback_buttons"
# "Share in thread" / "Share in channel" under a private answer.
SHARE_ACTION = "kbot_share"
REASON_VIEW = "kbot_feedback_reason"
REASON_BLOCK, REASON_ACTION = "reason", "choice"
DETAILS_BLOCK, DETAILS_ACTION = "details", "text"
REASONS = ("wrong", "outdated", "not found", "irrelevant sources", "other")
MAX_DETAILS_CHARS = 2000

# A fence may be indented (a command inside a numbered step).
_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[^\n]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+", re.M)
_QUOTE = re.compile(r"^&gt;[ \t]?", re.M)
_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{6,}$")
# Stands in for code and for finished bold markers while the rest is converted.
_HOLD = "\x00{}\x00"
_BOLD_MARK = "\x01"


def escape(text: str) -> str:
    """Escape the three characters Slack reserves for its own markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Markdown (as the answering service writes it) -> Slack mrkdwn.

    Code keeps its content (escaped only); links become ``<url|text>``; ``**bold**`` becomes
    ``*bold*``, ``*italic*`` ``_italic_``; headings become bold lines; bullets become •;
    ``&``, ``<`` and ``>`` are escaped everywhere else.
    """
    held: list[str] = []

    def hold(text: str) -> str:
        held.append(text)
        return _HOLD.format(len(held) - 1)

    text = _FENCE.sub(lambda m: hold(_fence(m.group(0))), markdown)
    text = _INLINE_CODE.sub(lambda m: hold(escape(m.group(0))), text)
    text = _LINK.sub(lambda m: hold(link(m.group(2), m.group(1))), text)
    text = escape(text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _BULLET.sub(r"\1• ", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = _QUOTE.sub("> ", text)  # a quote's marker is markup, not text to escape
    text = text.replace(_BOLD_MARK, "*")
    return re.sub("\x00(\\d+)\x00", lambda m: held[int(m.group(1))], text)


def _fence(block: str) -> str:
    # Slack ignores a fence's language tag and would show it as code; an indented fence's
    # lines lose the indent it had under its list item.
    lines = block.split("\n")
    indent = len(lines[0]) - len(lines[0].lstrip())
    body = [line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[1:-1]]
    return escape("\n".join(["```", *body, "```"]))


def link(url: str, text: str) -> str:
    """A mrkdwn link; ``|`` and ``>`` would end Slack's link syntax early."""
    safe = escape(url).replace("|", "%7C")
    return f"<{safe}|{escape(text).replace('|', '¦')}>"


def channel_ref(channel: str) -> str:
    """A channel id becomes a live mention; a ``#name`` stays as written."""
    return f"<#{channel}>" if _CHANNEL_ID.match(channel) else escape(channel)


def split_text(text: str, limit: int = MAX_SECTION_CHARS) -> list[str]:
    """Split mrkdwn into pieces of at most ``limit`` characters: between paragraphs where
    possible, then lines, then words; a code block cut in two is closed and reopened."""
    return _pack([part for para in _paragraphs(text) for part in _fit(para, limit)], "\n\n", limit)


def _pack(parts: list[str], sep: str, limit: int) -> list[str]:
    """Join consecutive ``parts`` (each at most ``limit`` long) with ``sep`` into as few
    pieces of at most ``limit`` characters as they fit."""
    pieces: list[str] = []
    current = ""
    for part in parts:
        joined = f"{current}{sep}{part}" if current else part
        if len(joined) <= limit:
            current = joined
        else:
            pieces.append(current)
            current = part
    if current:
        pieces.append(current)
    return pieces


def _paragraphs(text: str) -> list[str]:
    """Paragraphs, with each fenced code block kept whole."""
    out: list[str] = []
    buf: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        if not line.strip() and not in_code:
            if buf:
                out.append("\n".join(buf))
            buf = []
        else:
            buf.append(line)
    if buf:
        out.append("\n".join(buf))
    return out


def _fit(para: str, limit: int) -> list[str]:
    if len(para) <= limit:
        return [para]
    code = para.startswith("```") and para.endswith("```")
    body = para[3:-3].strip("\n") if code else para
    room = limit - 8 if code else limit  # the reopened fences and their newlines
    parts = _pack([p for line in body.split("\n") for p in _hard_wrap(line, room)], "\n", room)
    return [f"```\n{p}\n```" for p in parts] if code else parts


def _hard_wrap(line: str, limit: int) -> list[str]:
    """A line longer than ``limit``: split at spaces, or anywhere if it has none."""
    out: list[str] = []
    while len(line) > limit:
        cut = line.rfind(" ", 0, limit + 1)
        cut = cut if cut > 0 else limit
        out.append(line[:cut])
        line = line[cut:].lstrip(" ")
    out.append(line)
    return out


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str, block_id: str | None = None) -> Block:
    block: Block = {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
    if block_id:
        block["block_id"] = block_id
    return block


def answer_messages(
    answer: Answer,
    escalation_channel: str | None = None,
    *,
    native_feedback: bool = False,
    share: Block | None = None,
    note: str | None = None,
) -> list[list[Block]]:
    """The blocks of one or more thread replies; the last carries the sources and 👍/👎.

    ``native_feedback``: Slack's feedback buttons (assistant replies) instead of buttons;
    ``share``: a share button beside the votes (a private answer's); ``note``: a line
    above the answer (why a streamed answer was replaced)."""
    body = [_section(piece) for piece in split_text(answer_mrkdwn(answer, escalation_channel))]
    if note:
        body.insert(0, _context(f":information_source: {escape(note)}"))
    footer = answer_footer(answer, native_feedback=native_feedback, share=share)
    blocks = body + footer
    messages = [blocks[i : i + MAX_BLOCKS] for i in range(0, len(blocks), MAX_BLOCKS)]
    if len(messages) > 1 and len(messages[-1]) < len(footer):
        # Keep the sources, the mode line and the buttons together in the last message.
        messages[-2], messages[-1] = messages[-2][: -len(footer)], blocks[-len(footer) :]
        messages = [m for m in messages if m]
    return messages


def answer_mrkdwn(answer: Answer, escalation_channel: str | None = None) -> str:
    """The answer's text as mrkdwn, with the escalation channel under an abstention."""
    text = to_mrkdwn(answer.text)
    if answer.abstained and escalation_channel:
        text += f"\n\nFor a person's help, ask in {channel_ref(escalation_channel)}."
    return text


def answer_footer(
    answer: Answer, *, native_feedback: bool = False, share: Block | None = None
) -> list[Block]:
    """What follows an answer's text: its sources, how it was made, and the votes."""
    footer: list[Block] = []
    if answer.citations:
        head = "*Closest sources*" if answer.abstained else "*Sources*"
        lines = [head]
        for c in answer.citations:
            where = f"{c.connector}: {c.path}"
            stale = f" · _{c.stale}_" if c.stale else ""
            lines.append(f"[{c.n}] {link(c.url, c.title)} · {escape(where)}{stale}")
        footer += [_section(piece) for piece in split_text("\n".join(lines))]
    if answer.mode == "generated":
        how = "Generated by a language model from the sources above; check them before acting."
    else:
        how = "Quoted from the sources above (extracted, not generated)."
    footer.append(_context(how))
    if native_feedback and share is None:
        footer.append(feedback_buttons(answer.query_id))
    else:
        buttons = [
            _button("👍 Helpful", VOTE_UP, answer.query_id),
            _button("👎 Not helpful", VOTE_DOWN, answer.query_id),
        ]
        footer.append(
            {
                "type": "actions",
                "block_id": FEEDBACK_BLOCK,
                "elements": [*buttons, share] if share else buttons,
            }
        )
    return footer


def feedback_buttons(query_id: str) -> Block:
    """Slack's feedback buttons (a ``context_actions`` block) for an assistant reply; the
    clicked button's value is ``up:<query id>`` or ``down:<query id>``."""
    return ContextActionsBlock(
        block_id=FEEDBACK_BLOCK,
        elements=[
            FeedbackButtonsElement(
                action_id=FEEDBACK_ACTION,
                positive_button=FeedbackButtonObject(
                    text="Helpful", accessibility_label="This answer helped", value=f"up:{query_id}"
                ),
                negative_button=FeedbackButtonObject(
                    text="Not helpful",
                    accessibility_label="This answer did not help",
                    value=f"down:{query_id}",
                ),
            )
        ],
    ).to_dict()


def vote_of(value: str) -> tuple[str, str] | None:
    """``(vote, query id)`` from a feedback button's value; None when it is not one."""
    vote, _, query_id = value.partition(":")
    return (vote, query_id) if vote in ("up", "down") and query_id else None


def share_button(label: str, query_id: str, channel: str, thread_ts: str | None) -> Block:
    """A private answer's button that posts it where everyone sees it."""
    value = json.dumps({"q": query_id, "c": channel, "t": thread_ts})
    return {
        "type": "button",
        "action_id": SHARE_ACTION,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value,
    }


def shared_note(user: str) -> Block:
    """Under an answer a person shared from a private one."""
    return _context(f"Shared by <@{user}> from a private answer.")


def notice(text: str) -> list[Block]:
    """A one-section message (hints, errors)."""
    return [_section(escape(text))]


def _button(label: str, action_id: str, query_id: str) -> Block:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": query_id,
    }


def fallback_text(markdown: str) -> str:
    """The message's ``text``: shown in notifications, so short and without markup."""
    plain = re.sub(r"\*\*|`+|^#+[ \t]*", "", markdown, flags=re.M)
    plain = " ".join(plain.split())
    return plain if len(plain) <= FALLBACK_CHARS else plain[: FALLBACK_CHARS - 1] + "…"


def with_feedback_note(blocks: list[Block], vote: str, user: str) -> list[Block]:
    """The answer's blocks with a thank-you line under the buttons (replacing an older one).

    The buttons stay, so others can vote and a voter can change their mind.
    """
    emoji = "👍" if vote == "up" else "👎"
    note = _context(f"{emoji} Thanks <@{user}>, your feedback is recorded.", THANKS_BLOCK)
    out: list[Block] = []
    for b in blocks:
        if b.get("block_id") == THANKS_BLOCK:
            continue
        out.append(b)
        if b.get("block_id") == FEEDBACK_BLOCK:
            out.append(note)
    return out


def reason_modal(query_id: str, channel: str, message_ts: str) -> dict[str, Any]:
    """The 👎 follow-up: what was wrong with the answer."""
    meta = json.dumps({"query_id": query_id, "channel": channel, "ts": message_ts})
    return {
        "type": "modal",
        "callback_id": REASON_VIEW,
        "private_metadata": meta,
        "title": {"type": "plain_text", "text": "What was wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "blocks": [
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "The answer was"},
                "element": {
                    "type": "radio_buttons",
                    "action_id": REASON_ACTION,
                    "options": [
                        {"text": {"type": "plain_text", "text": r.capitalize()}, "value": r}
                        for r in REASONS
                    ],
                },
            },
            {
                "type": "input",
                "block_id": DETAILS_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Details"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": DETAILS_ACTION,
                    "multiline": True,
                    "max_length": MAX_DETAILS_CHARS,
                },
            },
        ],
    }


def reason_from_view(view: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """``(private metadata, reason)`` from a submitted reason modal; the reason is the choice,
    followed by the details when given (``"outdated: step 2 moved"``)."""
    meta = json.loads(view.get("private_metadata") or "{}")
    values = view.get("state", {}).get("values", {})
    chosen = (values.get(REASON_BLOCK, {}).get(REASON_ACTION, {}).get("selected_option")) or {}
    choice = chosen.get("value") if chosen.get("value") in REASONS else None
    details = (values.get(DETAILS_BLOCK, {}).get(DETAILS_ACTION, {}).get("value") or "").strip()
    reason = ": ".join(p for p in (choice, details) if p) or None
    return meta, reason


HOME_HELP = (
    "*How to ask kbot*\n"
    "• Mention *@kbot* in a channel: it answers in the thread, and answers replies there.\n"
    "• Message kbot directly, or open it in the assistant panel (the ✨ button).\n"
    "• `/kbot your question` anywhere: only you see the answer, and you can share it.\n"
    "• *Ask kbot about this* in a message's ⋮ menu: an answer about that message, privately.\n"
    "Every answer cites its sources; 👍/👎 tell the people who keep them where they fall short."
)
HOME_RECENT = 10


def home_view(recent: list[tuple[str, str | None, str]]) -> dict[str, Any]:
    """The App Home tab: how to ask, and the person's recent ``(question, link to the
    answer or None when it was private, when)``, newest first."""
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "kbot", "emoji": True}},
        _section(HOME_HELP),
        {"type": "divider"},
        _section("*Your recent questions*"),
    ]
    if not recent:
        blocks.append(_context("You have not asked kbot anything yet."))
    for question, url, when in recent[:HOME_RECENT]:
        shown = question if len(question) <= 150 else question[:149] + "…"
        where = link(url, shown) if url else f"{escape(shown)} · _answered privately_"
        blocks.append(_section(f"• {where}"))
        blocks.append(_context(escape(when)))
    return {"type": "home", "blocks": blocks}
