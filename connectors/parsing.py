"""Turn files (Markdown, HTML, reStructuredText, plain text) into text the chunker understands.

Everything is normalised to Markdown-ish text: headings become ``#`` lines so the
heading-aware chunker works the same on every format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from connectors.base import DocumentError

SUFFIX_FORMATS = {
    # Markdown templates (Middleman, GOV.UK tech-docs): read as Markdown, the ERB tags
    # replaced by the front matter they name or dropped. Longest suffixes first.
    ".md.erb": "markdown-erb",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".rst": "rst",
}
DEFAULT_INCLUDE = ["**/*" + s for s in SUFFIX_FORMATS]
MAX_FILE_BYTES = 5 * 1024 * 1024

# Text is newline-normalised before this runs. The lazy optional group lets an empty block
# ("---" twice) match without reaching for a later "---" line.
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?:(.*?)\n)??(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


@dataclass
class Parsed:
    title: str
    text: str
    format: str  # "markdown" or "text"
    front_matter: dict = field(default_factory=dict)


def file_format(path: str) -> str | None:
    """The format a file name maps to, or None when kbot does not read that kind of file."""
    name = PurePosixPath(path.lower()).name
    return next((f for s, f in SUFFIX_FORMATS.items() if name.endswith(s)), None)


def file_type(path: str) -> str:
    """A file's type as a person names it: its last suffix (``.erb``), or its name."""
    return PurePosixPath(path).suffix.lower() or PurePosixPath(path).name


def readable_types() -> str:
    """The suffixes kbot reads, for messages: ``.md.erb, .md, ...``."""
    return ", ".join(SUFFIX_FORMATS)


def decode(doc_id: str, raw: bytes) -> str:
    """Bytes to text, refusing binary or undecodable files with a reason a person can act on."""
    if len(raw) > MAX_FILE_BYTES:
        raise DocumentError(doc_id, f"file is {len(raw)} bytes, over the {MAX_FILE_BYTES} limit")
    if b"\0" in raw[:8192]:
        raise DocumentError(doc_id, "looks like a binary file (contains NUL bytes), skipped")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DocumentError(doc_id, f"not valid UTF-8 text (byte {e.start}), skipped") from e


def parse(doc_id: str, raw: bytes) -> Parsed:
    """Parse one file's bytes according to its name."""
    fmt = file_format(doc_id)
    if fmt is None:
        raise DocumentError(doc_id, "unsupported file type")
    text = decode(doc_id, raw).replace("\r\n", "\n")
    fallback_title = _title_from_name(doc_id)
    try:
        if fmt == "markdown":
            return parse_markdown(text, fallback_title)
        if fmt == "markdown-erb":
            return parse_markdown_template(text, fallback_title)
        if fmt == "html":
            return parse_html(text, fallback_title)
        if fmt == "rst":
            return parse_rst(text, fallback_title)
    except RecursionError as e:
        # Pathologically nested markup; one bad file must not stop the whole sync.
        raise DocumentError(doc_id, "markup is nested too deeply to read, skipped") from e
    return Parsed(title=fallback_title, text=text.strip(), format="text")


def parse_markdown(text: str, fallback_title: str) -> Parsed:
    front: dict = {}
    m = _FRONT_MATTER.match(text)
    if m:
        broken = False
        try:
            loaded = yaml.safe_load(m.group(1) or "")
        except (yaml.YAMLError, ValueError):
            # ValueError: YAML that parses but cannot be built, e.g. "date: 2024-13-45".
            loaded, broken = None, True
        if isinstance(loaded, dict):
            front = {str(k): v for k, v in loaded.items()}
        # Broken or empty front matter is dropped; a block that is valid YAML but not a
        # mapping is prose between two thematic breaks, and stays in the body.
        if broken or loaded is None or isinstance(loaded, dict):
            text = text[m.end() :]
    title = front.get("title")
    if not isinstance(title, str) or not title.strip():
        title = first_h1(text) or fallback_title
    return Parsed(title=title.strip(), text=text.strip(), format="markdown", front_matter=front)


# ``<%= current_page.data.title %>``, ``<%= current_page.data[:title] %>``,
# ``<%= current_page.data["title"] %>``: a front-matter field of the page itself.
_ERB_DATA = re.compile(r"<%=\s*current_page\.data(?:\.(\w+)|\[\s*[:\"']?(\w+)[\"']?\s*\])\s*-?%>")
_ERB_TAG = re.compile(r"<%.*?%>", re.S)


def parse_markdown_template(text: str, fallback_title: str) -> Parsed:
    """A Markdown template (``.md.erb``): its front matter read as in Markdown, a tag that
    prints one of the page's own front-matter fields replaced by that field, and every
    other ERB tag (code, comments, partials) dropped: kbot cannot run the site's Ruby."""
    parsed = parse_markdown(text, fallback_title)
    front = parsed.front_matter

    def field(m: re.Match[str]) -> str:
        value = front.get(m.group(1) or m.group(2))
        return "" if value is None else str(value)

    body = _ERB_TAG.sub("", _ERB_DATA.sub(field, parsed.text))
    body = re.sub(r"(?m)^#{1,6}[ \t]*$\n?", "", body)  # a heading whose field was missing
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    title = front.get("title")
    if not isinstance(title, str) or not title.strip():
        title = first_h1(body) or fallback_title
    return Parsed(title=title.strip(), text=body, format="markdown", front_matter=front)


def first_h1(text: str) -> str | None:
    """The first ``# Heading`` outside code fences (a shell comment is not a title)."""
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else _H1.match(line)
        if m:
            return m.group(1).strip()
    return None


# "title" too: a fragment without <body> would otherwise repeat its title as body text.
_DROP_TAGS = (
    "script",
    "style",
    "nav",
    "header",
    "footer",
    "aside",
    "noscript",
    "template",
    "form",
    "title",
)


def parse_html(html: str, fallback_title: str) -> Parsed:
    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    h1 = soup.find("h1")
    title = (title_tag.get_text(" ", strip=True) if title_tag else "") or (
        h1.get_text(" ", strip=True) if h1 else ""
    )
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    text = html_to_markdown(root)
    return Parsed(title=title or fallback_title, text=text, format="markdown")


def html_to_markdown(root: Tag) -> str:
    """A small HTML to Markdown conversion that keeps headings, lists, code and tables readable."""
    out: list[str] = []
    _walk(root, out)
    text = "".join(out)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _inline(tag: Tag) -> str:
    return re.sub(r"\s+", " ", tag.get_text(" ", strip=True))


def _walk(node: Tag, out: list[str]) -> None:
    for child in node.children:
        if isinstance(child, PreformattedString):
            continue  # comments, doctypes, processing instructions: not content
        if isinstance(child, NavigableString):
            s = str(child)
            if s.strip():
                out.append(re.sub(r"\s+", " ", s))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name
        if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
            out.append(f"\n\n{'#' * int(name[1])} {_inline(child)}\n\n")
        elif name == "pre":
            out.append(f"\n\n```\n{child.get_text().strip(chr(10))}\n```\n\n")
        elif name in ("ul", "ol"):
            out.append("\n")
            for i, li in enumerate(child.find_all("li", recursive=False), 1):
                bullet = f"{i}." if name == "ol" else "-"
                out.append(f"{bullet} {_inline(li)}\n")
            out.append("\n")
        elif name == "table":
            for row in child.find_all("tr"):
                cells = [_inline(c) for c in row.find_all(["th", "td"])]
                out.append("| " + " | ".join(cells) + " |\n")
            out.append("\n")
        elif name == "br":
            out.append("\n")
        elif name in ("p", "div", "section", "article", "main", "blockquote", "dl", "dd", "dt"):
            out.append("\n\n")
            _walk(child, out)
            out.append("\n\n")
        elif name == "code":
            out.append(f"`{child.get_text()}`")
        else:
            _walk(child, out)


def parse_rst(text: str, fallback_title: str) -> Parsed:
    from docutils.core import publish_parts
    from docutils.writers.html5_polyglot import Writer

    try:
        parts = publish_parts(
            source=text,
            writer=Writer(),
            settings_overrides={
                "report_level": 5,
                "halt_level": 5,
                "file_insertion_enabled": False,
                "raw_enabled": False,
                "doctitle_xform": False,
                "initial_header_level": 1,  # top sections are # headings
            },
        )
    except Exception:  # docutils raises many kinds; broken markup is indexed as plain text
        return Parsed(title=fallback_title, text=text.strip(), format="text")
    parsed = parse_html(parts["html_body"], fallback_title)
    if parsed.title == fallback_title:
        parsed.title = first_h1(parsed.text) or fallback_title
    return parsed


def _title_from_name(doc_id: str) -> str:
    name = PurePosixPath(doc_id).name
    for suffix in (".html.md.erb", ".html.md", *SUFFIX_FORMATS):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[-_]+", " ", name).strip() or doc_id
