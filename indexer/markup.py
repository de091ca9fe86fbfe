"""Markdown as a chat can show it: the markup a source keeps for its own site, made plain.

Runbooks and wikis are written for a renderer kbot is not: GitHub collapses a
``<details>`` block, a static site resolves ``[Alertmanager UI][link-15]`` from a definition
at the bottom of the page and ``(/manual/access)`` against its own host. Quoted in Slack or
Teams, each shows as raw markup or a link that goes nowhere. This runs on every Markdown
document before it is chunked, so the index, the passages and every surface get clean text:

- HTML that Markdown allows inline becomes what it shows: ``<details>`` its text, the
  ``<summary>`` a line of its own, ``<br>`` a line break (a space inside a table row),
  ``<img alt>`` its alt text, ``<a href>`` a Markdown link, ``<code>`` a code span, an HTML
  ``<table>`` a Markdown table, comments nothing. Only known tag names are touched:
  ``kubectl logs <pod>`` in prose keeps its ``<pod>``.
- Reference links (``[text][ref]``, ``[text][]``, ``[ref]``) are resolved from the
  document's own definitions, and the definitions dropped.
- Relative links (``#anchor``, ``/path``, ``../x.md``) are resolved against the document's
  URL when it is a web address; otherwise the link text stays and the link goes.
- Images become their alt text: a chat message does not show them inline.

Code blocks and code spans are left exactly as written.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

from bs4 import BeautifulSoup

from connectors.parsing import html_to_markdown

_FENCE = re.compile(r"^[ \t]*(```+|~~~+)")
# A definition's address and optional title, to the end of the line.
_TARGET = r"<?(\S+?)>?(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?[ \t]*$"
_DEFINITION = re.compile(r"^ {0,3}\[(?!\^)([^\]\n]+)\]:[ \t]*" + _TARGET)
# A definition whose address is on the line after its label (CommonMark allows it).
_BARE_LABEL = re.compile(r"^ {0,3}\[(?!\^)([^\]\n]+)\]:[ \t]*$")
_NEXT_LINE_TARGET = re.compile(r"^[ \t]+" + _TARGET)
# Hugo's shortcodes ({{< tabpane >}}, {{% tab Linux %}}, {{% param version %}}) and heading
# ids ({#install}) are for the site's renderer: a tab's name becomes a bold line, a
# parameter a <placeholder>, heading ids and every other shortcode nothing.
_SHORTCODE = re.compile(r"\{\{([<%])\s*(/?)\s*([\w.-]+)([^\n]*?)\s*[>%]\}\}")
_HEADING_ID = re.compile(r"[ \t]*\{#[\w.:-]+\}[ \t]*$", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TABLE = re.compile(r"<table\b.*?</table\s*>", re.S | re.I)
_SUMMARY = re.compile(r"<summary\b[^>]*>(.*?)</summary\s*>", re.S | re.I)
_IMG = re.compile(r"<img\b[^>]*?>", re.I)
_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_ANCHOR = re.compile(
    r"<a\b[^>]*?\bhref\s*=\s*(?:\"([^\"]*)\"|'([^']*)')[^>]*>(.*?)</a\s*>", re.S | re.I
)
_CODE_TAG = re.compile(r"<(code|kbd|tt)\b[^>]*>(.*?)</\1\s*>", re.S | re.I)
_BR = re.compile(r"<br\s*/?>", re.I)
_BLOCK_TAG = re.compile(r"</?(?:details|p|div|center|section|blockquote)\b[^>]*>", re.I)
_INLINE_TAG = re.compile(
    r"</?(?:b|strong|i|em|u|s|span|sup|sub|small|big|font|mark|ins|del|abbr|a)"
    r"\b[^>]*>",
    re.I,
)
_IMAGE_LINK = re.compile(r"!\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])")
# The text may wrap onto the next line, as prose does.
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_FULL_REF = re.compile(r"\[([^\]\n]+)\]\[([^\]\n]*)\]")
_SHORT_REF = re.compile(r"(?<![\]!\\])\[([^\]\n]+)\](?![(\[:])")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
_ENTITIES = re.compile(r"&(?:nbsp|amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+);", re.I)


def clean_markdown(text: str, url: str = "") -> str:
    """``text`` with the markup described above made plain; ``url`` is the document's."""
    prose: list[str] = []
    out: list[tuple[bool, str]] = []  # (is code, lines)
    definitions: dict[str, str] = {}
    fence: str | None = None
    pending: str | None = None  # a definition's label, its address on the next line
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            out.append((True, line))
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            out.append((True, line))
            continue
        d = _DEFINITION.match(line)
        if d:
            definitions.setdefault(_label(d.group(1)), d.group(2))
            continue
        target = _NEXT_LINE_TARGET.match(line) if pending is not None else None
        if target:
            out.pop()  # "[releases]:" on the line before: a definition, not text
            definitions.setdefault(pending, target.group(1))
            pending = None
            continue
        label = _BARE_LABEL.match(line)
        pending = _label(label.group(1)) if label else None
        out.append((False, line))
    # Consecutive prose lines are cleaned together: an HTML table spans lines.
    result: list[str] = []
    for is_code, line in out:
        if is_code:
            if prose:
                result.append(_clean_prose("\n".join(prose), definitions, url))
                prose = []
            result.append(line)
        else:
            prose.append(line)
    if prose:
        result.append(_clean_prose("\n".join(prose), definitions, url))
    cleaned = "\n".join(result)
    return re.sub(r"\n{3,}", "\n\n", cleaned).strip("\n")


def _label(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().lower()


def _clean_prose(text: str, definitions: dict[str, str], url: str) -> str:
    # Code spans are set aside so nothing inside them is touched.
    spans: list[str] = []

    def keep(m: re.Match[str]) -> str:
        spans.append(m.group(0))
        return f"\0{len(spans) - 1}\0"

    text = _CODE_SPAN.sub(keep, text)
    text = _hugo(text)
    text = _html(text)
    text = _links(text, definitions, url)
    return re.sub(r"\0(\d+)\0", lambda m: spans[int(m.group(1))], text)


def _hugo(text: str) -> str:
    if "{" not in text:
        return text
    text = _HEADING_ID.sub("", text)

    def shortcode(m: re.Match[str]) -> str:
        closing, name, args = m.group(2), m.group(3).lower(), m.group(4).strip()
        if closing:
            return ""
        value = args.split("=", 1)[-1].strip().strip("\"'") if args else ""
        if name == "tab" and value:
            return f"\n\n**{value}**\n\n"
        if name in ("param", "_param") and value:
            return f"<{value}>"
        return ""

    text = _SHORTCODE.sub(shortcode, text)
    return re.sub(r"^[ \t]+$", "", text, flags=re.MULTILINE)  # what a shortcode leaves


def _html(text: str) -> str:
    if "<" not in text and "&" not in text:
        return text
    text = _COMMENT.sub("", text)
    text = _TABLE.sub(lambda m: "\n\n" + _table(m.group(0)) + "\n\n", text)
    text = _SUMMARY.sub(lambda m: f"\n\n{_inline_text(m.group(1))}\n\n", text)
    text = _IMG.sub(_img, text)
    text = _ANCHOR.sub(
        lambda m: f"[{_inline_text(m.group(3))}]({m.group(1) or m.group(2) or ''})", text
    )
    text = _CODE_TAG.sub(lambda m: f"`{html.unescape(m.group(2)).strip()}`", text)
    lines = []
    for line in text.split("\n"):
        # A break inside a Markdown table row would end the row: it becomes a space there.
        lines.append(_BR.sub(" " if line.lstrip().startswith("|") else "\n", line))
    text = "\n".join(lines)
    text = _BLOCK_TAG.sub("\n\n", text)
    text = _INLINE_TAG.sub("", text)
    return _ENTITIES.sub(lambda m: html.unescape(m.group(0)).replace("\xa0", " "), text)


def _inline_text(fragment: str) -> str:
    return re.sub(r"\s+", " ", _INLINE_TAG.sub("", fragment)).strip()


def _img(m: re.Match[str]) -> str:
    alt = _ALT.search(m.group(0))
    return (alt.group(1) or alt.group(2) or "") if alt else ""


def _table(fragment: str) -> str:
    return html_to_markdown(BeautifulSoup(fragment, "html.parser"))


def _links(text: str, definitions: dict[str, str], url: str) -> str:
    text = _IMAGE_LINK.sub(lambda m: m.group(1), text)

    def full(m: re.Match[str]) -> str:
        target = definitions.get(_label(m.group(2) or m.group(1)))
        return m.group(1) if target is None else f"[{m.group(1)}]({target})"

    def short(m: re.Match[str]) -> str:
        target = definitions.get(_label(m.group(1)))
        return m.group(0) if target is None else f"[{m.group(1)}]({target})"

    if definitions or "][" in text:
        text = _FULL_REF.sub(full, text)
    if definitions:
        text = _SHORT_REF.sub(short, text)

    def inline(m: re.Match[str]) -> str:
        label, target = m.group(1), m.group(2)
        absolute = resolve(target, url)
        if absolute is None:
            return label
        return f"[{label}]({absolute})"

    return _INLINE_LINK.sub(inline, text)


def resolve(target: str, base: str) -> str | None:
    """``target`` as an absolute web address, or None when there is none to give."""
    if not target:
        return None
    if _SCHEME.match(target):
        return target if target.lower().startswith(("http:", "https:", "mailto:")) else None
    if target.startswith("//"):
        return "https:" + target
    if base.lower().startswith(("http://", "https://")):
        return urljoin(base, target)
    return None
