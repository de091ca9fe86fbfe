"""Slack's message markup read back as words, and kbot's apology: shared by the Slack
adapter's modules."""

from __future__ import annotations

import re

INTERNAL_ERROR = (
    "Sorry, something went wrong on my side while answering; the details are in kbot's log. "
    "Please try again in a few minutes."
)

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def question_text(text: str, bot_user_id: str | None) -> str:
    """The question in a Slack message: the bot's mention removed, Slack's link syntax
    (``<url|label>``, ``<#C1|name>``, ``<@U1>``) turned back into words, entities unescaped."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)

    def words(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("#"):
            return f"#{label}" if label else target
        if target.startswith("@"):
            return f"@{label}" if label else target
        if target.startswith("!"):
            return f"@{label or target[1:]}"
        return label or target.removeprefix("mailto:")

    text = _LINK.sub(words, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
