"""HTML extraction, measured: kbot's own main-content extraction and HTML-to-Markdown
conversion against trafilatura, readability-lxml, markdownify and html2text, on real pages
whose source text is known.

The pages are Debian's Python documentation (``apt-get install python3.11-doc``): Sphinx
HTML under /usr/share/doc/python3.11/html, each with its reStructuredText source under
``_sources/``, which is the ground truth of what the page's main content says. Nothing of
it is copied into the repository.

Two comparisons:

- extraction (the whole page in, its main content out): ``connectors.web.extraction``'s
  ``extract_page`` vs ``trafilatura.extract`` vs ``readability.Document(...).summary()``
  converted by kbot's ``html_to_markdown``;
- conversion (the page's main element in, Markdown out): ``connectors.parsing``'s
  ``html_to_markdown`` vs ``markdownify`` vs ``html2text``.

Measures per tool: word precision, recall and F1 against the source (lowercased ``\\w+``
words as a multiset, as trafilatura's own evaluation scores extractors; reST directives,
role names and underlines removed from the source), the share of the source's section
titles kept as Markdown headings, the share of its ``>>>`` examples kept inside code, the
pages where Sphinx's navigation chrome leaked in, the time per page, and failures.

Usage: ``.venv/bin/python bench/extraction.py [--limit N] [--root PATH] [--out PATH]``.
The optional libraries are for measuring only (``pip install trafilatura readability-lxml
markdownify html2text``); a tool that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bs4 import BeautifulSoup, Tag

from connectors.parsing import html_to_markdown
from connectors.web.extraction import extract_page

ROOT = Path("/usr/share/doc/python3.11/html")
FOLDERS = ("library", "howto", "tutorial", "reference", "using", "faq")
CHROME = ("Previous topic", "Next topic", "This Page", "Report a Bug", "Show Source",
          "Quick search", "Navigation")  # fmt: skip
_UNDERLINE = re.compile(r"^([=\-~^\"'*+#`:.])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::.*$|^\s*:[\w-]+:.*$|^\s*\.\. _[^:]+:.*$")
_ROLE = re.compile(r":[\w:-]+:`([^`<]*)(?:<[^>]*>)?`")

Tool = Callable[[str, str], str]  # (html, url) -> Markdown or text


# -- ground truth ---------------------------------------------------------------------


def source_text(rst: str) -> str:
    """The words a reader of the page sees, from its reST: roles to their text, directive
    and option lines, link targets and title underlines dropped."""
    lines = []
    for line in rst.splitlines():
        if _UNDERLINE.match(line) or _DIRECTIVE.match(line):
            continue
        lines.append(_ROLE.sub(r"\1", line))
    return "\n".join(lines)


def section_titles(rst: str) -> list[str]:
    lines = rst.splitlines()
    return [
        lines[i].strip()
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and _UNDERLINE.match(lines[i + 1])
        and len(lines[i + 1].strip()) >= len(lines[i].strip())
        and not _UNDERLINE.match(lines[i])
    ]


def examples(rst: str, limit: int = 20) -> list[str]:
    """The first ``>>>`` line of each doctest example."""
    found, previous = [], ""
    for line in rst.splitlines():
        s = line.strip()
        if s.startswith(">>> ") and not previous.startswith((">>>", "...")):
            found.append(s)
        previous = s
    return found[:limit]


def words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in re.findall(r"\w+", text))


# -- scoring --------------------------------------------------------------------------


# Link targets are not words a reader reads (kbot's converter keeps only a link's text).
_LINK_TARGET = re.compile(r"\]\([^)]*\)")


def prf(got: str, truth: str) -> tuple[float, float, float]:
    g, t = words(_LINK_TARGET.sub("]", got)), words(truth)
    common = sum((g & t).values())
    p = common / sum(g.values()) if g else 0.0
    r = common / sum(t.values()) if t else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.replace("¶", "")).strip().lower()


def headings_kept(out: str, titles: list[str]) -> float | None:
    if not titles:
        return None
    out = _LINK_TARGET.sub("]", out)  # markdownify keeps Sphinx's "[¶](#anchor)"
    heads = {_norm(m) for m in re.findall(r"^#{1,6}\s+(.+)$", out, re.M)}
    return sum(_norm(_ROLE.sub(r"\1", t)) in heads for t in titles) / len(titles)


def code_lines(out: str) -> set[str]:
    """The lines of ``out`` inside fenced or indented code blocks, stripped."""
    inside, found = False, set()
    for line in out.splitlines():
        if line.strip().startswith(("```", "~~~")):
            inside = not inside
            continue
        if inside or line.startswith(("    ", "\t")):
            found.add(line.strip())
    return found


def code_kept(out: str, wanted: list[str]) -> float | None:
    if not wanted:
        return None
    lines = code_lines(out)
    return sum(w in lines for w in wanted) / len(wanted)


def chrome_leaked(out: str) -> bool:
    return any(c in out for c in CHROME)


# -- tools ----------------------------------------------------------------------------


def _main(html: str) -> Tag:
    soup = BeautifulSoup(html, "html.parser")
    main = soup.find(attrs={"role": "main"}) or soup.find("main") or soup.body or soup
    assert isinstance(main, Tag)
    return main


def extraction_tools() -> dict[str, Tool | str]:
    tools: dict[str, Tool | str] = {"kbot extract_page": lambda h, u: extract_page(h, u).text}
    try:
        import trafilatura

        tools["trafilatura"] = lambda h, u: (
            trafilatura.extract(
                h,
                url=u,
                output_format="markdown",
                include_tables=True,
                include_formatting=True,
                include_links=False,
                include_comments=False,
            )  # fmt: skip
            or ""
        )
    except ImportError:
        tools["trafilatura"] = "not installed"
    try:
        from readability import Document

        tools["readability + kbot converter"] = lambda h, u: html_to_markdown(
            BeautifulSoup(Document(h).summary(), "html.parser")
        )
    except ImportError:
        tools["readability + kbot converter"] = "not installed"
    return tools


def conversion_tools() -> dict[str, Tool | str]:
    tools: dict[str, Tool | str] = {
        "kbot html_to_markdown": lambda h, u: html_to_markdown(_main(h))
    }
    try:
        from markdownify import ATX, markdownify

        tools["markdownify"] = lambda h, u: markdownify(str(_main(h)), heading_style=ATX)
    except ImportError:
        tools["markdownify"] = "not installed"
    try:
        import html2text

        def convert(h: str, u: str) -> str:
            c = html2text.HTML2Text(baseurl=u, bodywidth=0)
            c.ignore_images = True
            return c.handle(str(_main(h)))

        tools["html2text"] = convert
    except ImportError:
        tools["html2text"] = "not installed"
    return tools


# -- the run --------------------------------------------------------------------------


@dataclass
class Page:
    path: Path
    url: str
    html: str
    truth: str
    titles: list[str]
    examples: list[str]


@dataclass
class Score:
    tool: str
    skipped: str | None = None
    p: list[float] = field(default_factory=list)
    r: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)
    code: list[float] = field(default_factory=list)
    chrome: int = 0
    ms: list[float] = field(default_factory=list)
    failures: int = 0

    def row(self) -> list[str]:
        if self.skipped:
            return [self.tool, "skipped: " + self.skipped, *[""] * 9]

        def mean(xs: list[float]) -> str:
            return f"{statistics.fmean(xs):.3f}" if xs else "–"

        ms = sorted(self.ms)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else 0.0
        return [
            self.tool, str(len(self.f)), mean(self.p), mean(self.r), mean(self.f),
            mean(self.heads), mean(self.code), str(self.chrome),
            f"{statistics.median(ms):.1f}" if ms else "–", f"{p95:.1f}", str(self.failures),
        ]  # fmt: skip


def load_pages(root: Path, limit: int) -> list[Page]:
    found = []
    for folder in FOLDERS:
        for html_path in sorted((root / folder).glob("*.html")):
            rel = html_path.relative_to(root)
            src = root / "_sources" / rel.with_suffix(".rst.txt")
            if src.is_file():
                found.append((html_path, src))
    step = max(1, len(found) // limit) if limit else 1
    pages = []
    for html_path, src in found[::step][: limit or None]:
        rst = src.read_text(encoding="utf-8", errors="replace")
        pages.append(
            Page(
                html_path,
                "https://docs.python.org/3.11/" + html_path.relative_to(root).as_posix(),
                html_path.read_text(encoding="utf-8", errors="replace"),
                source_text(rst),
                section_titles(rst),
                examples(rst),
            )
        )
    return pages


def score(name: str, tool: Tool | str, pages: list[Page]) -> Score:
    if isinstance(tool, str):
        return Score(name, skipped=tool)
    s = Score(name)
    for page in pages:
        start = time.perf_counter()
        try:
            out = tool(page.html, page.url)
        except Exception:  # noqa: BLE001 - a tool's failure on a page is a measure here
            s.failures += 1
            continue
        s.ms.append((time.perf_counter() - start) * 1000)
        if not out.strip():
            s.failures += 1
            continue
        p, r, f = prf(out, page.truth)
        s.p.append(p), s.r.append(r), s.f.append(f)
        if (h := headings_kept(out, page.titles)) is not None:
            s.heads.append(h)
        if (c := code_kept(out, page.examples)) is not None:
            s.code.append(c)
        s.chrome += chrome_leaked(out)
    return s


HEADER = ["tool", "pages", "precision", "recall", "F1", "headings kept", "examples in code",
          "chrome pages", "ms p50", "ms p95", "failures"]  # fmt: skip


def table(scores: list[Score]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(s.row()) + " |" for s in scores]
    return "\n".join(lines)


def versions() -> str:
    out = []
    for dist in ("trafilatura", "readability-lxml", "markdownify", "html2text", "beautifulsoup4"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--limit", type=int, default=150, help="pages, spread evenly (0: all)")
    ap.add_argument("--out", type=Path, help="also write the report as Markdown here")
    args = ap.parse_args()
    if not (args.root / "_sources").is_dir():
        raise SystemExit(
            f"no Sphinx pages with sources under {args.root}: apt-get install python3.11-doc"
        )
    pages = load_pages(args.root, args.limit)
    report = [
        f"{len(pages)} pages of {args.root}, {datetime.now(UTC):%Y-%m-%d}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{versions()}",
        "",
        "Extraction (whole page in):",
        "",
        table([score(n, t, pages) for n, t in extraction_tools().items()]),
        "",
        "Conversion (the main element in):",
        "",
        table([score(n, t, pages) for n, t in conversion_tools().items()]),
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
