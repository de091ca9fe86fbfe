"""What kbot reads from a fetched page: the main content as Markdown, the title, the links,
and the page's robots directives. Markdown and plain-text pages are read as they are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from bs4 import BeautifulSoup, Tag

from connectors.parsing import html_to_markdown, parse_markdown
from connectors.web.urls import normalize_url, title_from_url

# Bump when extraction changes: the mirror's texts are then re-fetched, not trusted.
EXTRACTOR_VERSION = 1
HTML_TYPES = ("text/html", "application/xhtml+xml")
MARKDOWN_TYPES = ("text/markdown", "text/x-markdown")

# Page chrome, dropped before the main content is converted.
_CHROME_TAGS = [
    "head",
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "footer",
    "form",
    "iframe",
    "svg",
    "button",
    "dialog",
]
_CHROME_ROLES = ["navigation", "banner", "contentinfo", "complementary", "search", "menu"]


@dataclass
class Extracted:
    """What one HTML page holds for kbot."""

    title: str
    text: str  # Markdown: headings, lists, code fences, tables
    links: list[str]  # absolute, normalised, in page order, fragments dropped
    noindex: bool = False
    nofollow: bool = False


def extract_page(html: str, url: str) -> Extracted:
    """The main content of a page as Markdown, its title, and its links.

    Links are taken from the whole page (navigation is how a crawler finds pages); the
    content only from ``role=main``, ``<main>`` or ``<article>`` (else ``<body>``), without
    navigation, sidebars, footers, forms, scripts or hidden elements. The title is the
    content's first ``<h1>``, else ``<title>``.
    """
    soup = BeautifulSoup(html, "html.parser")
    noindex = nofollow = False
    for meta in soup.find_all("meta", attrs={"name": re.compile(r"^(robots|kbot)$", re.I)}):
        words = {w.strip().lower() for w in str(meta.get("content", "")).split(",")}
        noindex |= bool(words & {"noindex", "none"})
        nofollow |= bool(words & {"nofollow", "none"})
    base_tag = soup.find("base", href=True)
    base = urljoin(url, str(base_tag["href"])) if isinstance(base_tag, Tag) else url
    links: list[str] = []
    if not nofollow:
        seen: set[str] = set()
        for a in soup.find_all("a", href=True):
            href = str(a["href"]).strip()
            if href.lower().startswith(("mailto:", "javascript:", "tel:", "data:")):
                continue
            link = normalize_url(href, base)
            if link and link not in seen:
                seen.add(link)
                links.append(link)
    title_tag = soup.find("title")
    page_title = title_tag.get_text(" ", strip=True) if title_tag else ""

    root = (
        soup.find(attrs={"role": "main"}) or soup.find("main") or soup.find("article") or soup.body
    )
    if not isinstance(root, Tag):
        root = soup
    chrome = list(_CHROME_TAGS)
    if root is soup.body or root is soup:
        # Without a main element, the page's own header is chrome; inside <main> or
        # <article>, a <header> usually holds the page's title, which is content.
        chrome += ["header", "title"]
    drop = [
        *root.find_all(chrome),
        *root.find_all(attrs={"role": _CHROME_ROLES}),
        *root.find_all(attrs={"hidden": True}),
        *root.find_all(attrs={"aria-hidden": "true"}),
    ]
    for tag in drop:
        if not tag.decomposed:
            tag.decompose()
    h1 = root.find("h1")
    title = (h1.get_text(" ", strip=True) if isinstance(h1, Tag) else "") or page_title
    return Extracted(
        title=title, text=html_to_markdown(root), links=links, noindex=noindex, nofollow=nofollow
    )


def read_page(content_type: str, text: str, url: str) -> Extracted | None:
    """The page in a response of this Content-Type, or None when it is not a page for kbot
    (an image, a PDF, JSON). Raises RecursionError on markup nested too deeply to read."""
    if content_type in HTML_TYPES:
        return extract_page(text, url)
    if content_type in MARKDOWN_TYPES:
        parsed = parse_markdown(text.replace("\r\n", "\n"), title_from_url(url))
        return Extracted(parsed.title, parsed.text, [])
    if content_type == "text/plain":
        return Extracted(title_from_url(url), text.strip(), [])
    return None


def decode(body: bytes, content_type: str) -> str:
    """The body as text, by the charset of Content-Type or a <meta charset>, else UTF-8.
    Raises ValueError for a binary body or an unknown or wrong charset."""
    if b"\0" in body[:8192]:
        raise ValueError("looks like a binary file (contains NUL bytes)")
    m = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.I)
    if m is None:
        m = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:2048], re.I)
    charset = m.group(1) if m else "utf-8"
    if isinstance(charset, bytes):
        charset = charset.decode("ascii")
    try:
        return body.decode(charset)
    except LookupError:
        raise ValueError(f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid {charset} text (byte {e.start})") from None
