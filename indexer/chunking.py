"""Heading-aware chunking: every chunk knows where in its document it came from.

A document is cut into sections at Markdown headings (outside code fences). Consecutive
small sections are packed together up to ``chunk_size`` characters, so a short runbook stays
one coherent chunk; a long section is split further with langchain's recursive splitter.
Each chunk keeps its heading path, e.g. "Runbook › Diagnosis › Step 2".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from langchain_text_splitters import RecursiveCharacterTextSplitter

from connectors.base import Document
from indexer.markup import clean_markdown

SEP = " › "
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, as stored in (and retrieved from) the index."""

    id: str
    connector: str
    doc_id: str
    index: int
    text: str
    heading_path: tuple[str, ...]
    title: str
    url: str
    audience: str
    last_modified: datetime

    @property
    def heading(self) -> str:
        return SEP.join(self.heading_path)

    def embedding_text(self) -> str:
        """What is embedded: the heading path gives a short section its context."""
        return f"{self.heading}\n\n{self.text}"

    @property
    def file_stem(self) -> str:
        """The document's file name without extensions: "CPUThrottlingHigh" for
        "runbooks/CPUThrottlingHigh.md"."""
        return PurePosixPath(self.doc_id).name.split(".", 1)[0]

    def search_text(self) -> str:
        """What keyword search indexes: the file name too, since alert names and page slugs
        often appear only there ("CPUThrottlingHigh.md" titled "CPU Throttling High")."""
        return f"{self.file_stem}\n{self.embedding_text()}"


def chunk_id(connector: str, doc_id: str, index: int) -> str:
    return f"{connector}:{doc_id}:{index}"


@dataclass
class _Section:
    path: tuple[str, ...]
    text: str  # including its own heading line, verbatim


def sections(text: str, title: str) -> list[_Section]:
    """Cut Markdown at headings, keeping every line verbatim (code indentation included)."""
    out: list[_Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip("\n")
        if body.strip():
            out.append(_Section(_path(title, stack), body))
        lines.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            # A heading with no text of its own ("## Mitigation" directly followed by
            # "### Defrag") stays with the section it introduces, not the one before.
            if any(ln.strip() and not _HEADING.match(ln) for ln in lines):
                flush()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, clean_heading(m.group(2))))
        lines.append(line)
    flush()
    return out


def clean_heading(h: str) -> str:
    """A heading's plain text: no anchor suffix, emphasis marks or link syntax."""
    h = re.sub(r"\{#[^}]*\}\s*$", "", h)  # {#anchor} suffixes
    h = re.sub(r"[`*_]", "", h)
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h).strip()


def _path(title: str, stack: list[tuple[int, str]]) -> tuple[str, ...]:
    names = [name for _, name in stack]
    if names and names[0].casefold() == title.casefold():
        names = names[1:]
    return (title, *names)


class Chunker:
    """Splits documents into chunks of about ``chunk_size`` characters."""

    # Bump when the chunking logic changes: stored documents are then re-chunked.
    # 5: Markdown is made plain first (indexer.markup: HTML, reference and relative links).
    # 6: and Hugo shortcodes, heading ids, definitions with the address on the next line.
    VERSION = 6

    def __init__(self, chunk_size: int = 1000, chunk_overlap: int = 100):
        self.chunk_size = chunk_size
        self.signature = f"chunker-v{self.VERSION}:{chunk_size}:{chunk_overlap}"
        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=min(chunk_overlap, chunk_size // 2),
            separators=["\n## ", "\n### ", "\n#### ", "\n```\n", "\n\n", "\n", ". ", " ", ""],
            keep_separator="start",
        )

    def split(self, doc: Document) -> list[Chunk]:
        if doc.format == "markdown":
            parts = sections(clean_markdown(doc.text, doc.url), doc.title)
        else:
            parts = [_Section((doc.title,), doc.text)] if doc.text.strip() else []
        pieces: list[tuple[tuple[str, ...], str]] = []
        pending: _Section | None = None
        for sec in parts:
            if len(sec.text) > self.chunk_size:
                if pending:
                    pieces.append((pending.path, pending.text))
                    pending = None
                split = _mend(sec.text, self.splitter.split_text(sec.text))
                pieces.extend((sec.path, t) for t in split)
            elif pending and len(pending.text) + 2 + len(sec.text) <= self.chunk_size:
                pending = _Section(
                    _common(pending.path, sec.path), pending.text + "\n\n" + sec.text
                )
            else:
                if pending:
                    pieces.append((pending.path, pending.text))
                pending = sec
        if pending:
            pieces.append((pending.path, pending.text))
        pieces = _fold_bare_headings(pieces)
        return [
            Chunk(
                id=chunk_id(doc.connector, doc.id, i),
                connector=doc.connector,
                doc_id=doc.id,
                index=i,
                text=text.strip(),
                heading_path=path,
                title=doc.title,
                url=doc.url,
                audience=doc.audience,
                last_modified=doc.last_modified,
            )
            for i, (path, text) in enumerate(p for p in pieces if p[1].strip())
        ]


def _mend(text: str, pieces: list[str]) -> list[str]:
    """``pieces`` of ``text`` (the splitter's output) made readable on their own.

    - A piece's overlap with the one before starts at a line or sentence, not mid-word:
      "values (requests values)." quoted alone answers nothing. Only text the previous
      piece already holds is dropped.
    - A code block cut in two is closed again. Otherwise one piece keeps an unclosed
      fence and the next starts inside code, its closing fence read as an opening one,
      and everything after it shows (and is quoted) as code. A piece that starts inside
      a block reopens it with the block's own fence line (its language tag kept); one
      that ends inside a block closes it.
    """
    out: list[str] = []
    cursor = prev_end = 0
    for piece in pieces:
        start = text.find(piece, cursor)
        if start < 0:  # not verbatim (the splitter strips; never seen): keep it as it is
            out.append(piece)
            continue
        cursor = start + 1
        if start < prev_end and start > 0 and text[start - 1] != "\n":
            overlap = text[start : prev_end + 1]  # up to the break right after it
            cut = min((i for i in (overlap.find("\n"), overlap.find(". ")) if i >= 0), default=-1)
            if cut >= 0:
                skip = cut + 1 if overlap[cut] == "\n" else cut + 2
                piece, start = piece[skip:].lstrip(), start + skip
        prev_end = max(prev_end, start + len(piece))
        opening = _open_fence(text[:start])
        lines = piece.split("\n")
        if opening is not None:
            # A piece that starts with the block's closing fence just drops it.
            lines = lines[1:] if _FENCE.match(lines[0]) else [opening, *lines]
        end = _open_fence("\n".join(lines))
        if end is not None:
            lines.append(re.match(r"\s*(`{3,}|~{3,})", end).group(1))
        out.append("\n".join(lines).strip("\n"))
    return [p for p in out if p.strip()]


def _open_fence(text: str) -> str | None:
    """The fence line of the code block ``text`` ends inside, or None."""
    opening = None
    for line in text.split("\n"):
        if _FENCE.match(line):
            opening = None if opening is not None else line.strip()
    return opening


def _is_bare_heading(text: str) -> bool:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    return bool(lines) and all(_HEADING.match(ln) for ln in lines)


def _fold_bare_headings(
    pieces: list[tuple[tuple[str, ...], str]],
) -> list[tuple[tuple[str, ...], str]]:
    """A piece that is only headings (the splitter cut right after them) joins the next."""
    out: list[tuple[tuple[str, ...], str]] = []
    carry = ""
    for path, text in pieces:
        if _is_bare_heading(text):
            carry += text.strip() + "\n\n"
            continue
        out.append((path, carry + text if carry else text))
        carry = ""
    if carry and out:
        path, text = out[-1]
        out[-1] = (path, text + "\n\n" + carry.strip())
    return out


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The heading path two packed sections share (at least the title)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[: max(n, 1)]


# Characters a chunk must repeat of the one before to count as overlap (join_chunks).
MIN_OVERLAP = 10
_LIST_ITEM = re.compile(r"^\s*\d+[.)]\s+")


def join_chunks(texts: Iterable[str]) -> str:
    """A document's text rebuilt from its chunks, in chunk order.

    Consecutive chunks of a long section overlap: the next one repeats the last lines of
    the one before, its first line possibly only their end. That repetition is dropped
    (the longest run of lines the text so far ends with), so a list is not read with
    repeated or broken items; otherwise chunks are joined with a blank line. A chunk cut
    inside a code block ends with a closing fence and the next one starts with an opening
    fence that the document does not have; around an overlap, both are dropped.

    Chunks are stored stripped, so a chunk's first line has lost its indentation. When it
    is not a list item or heading and the text so far ends with an indented line, it gets
    that line's indentation back: an item's paragraph cut in two stays in its item. A
    chunk that starts with a nested list's item is left as it is (nothing tells it from
    an outer one), and that item reads as one of the outer list; it lies between its
    outer neighbours, so an answer that keeps the whole list keeps it too.
    """
    out: list[str] = []
    for text in texts:
        new = text.split("\n")
        for drop_end, drop_start in ((0, 0), (0, 1), (1, 0), (1, 1)):
            if drop_end and not (out and _FENCE.match(out[-1])):
                continue
            if drop_start and not _FENCE.match(new[0]):
                continue
            k = _overlap(out[: len(out) - drop_end], new[drop_start:])
            if k:
                del out[len(out) - drop_end :]
                new = new[drop_start + k :]
                break
        else:
            if out:
                new = [_reindent(new[0], out), *new[1:]]
                out.append("")
        out.extend(new)
    return "\n".join(out)


def _reindent(first: str, before: list[str]) -> str:
    """A chunk's (stripped) first line, with the indentation it likely had (see join_chunks)."""
    if not first.strip() or _LIST_ITEM.match(first) or re.match(r"#{1,6}\s", first):
        return first
    last = next((line for line in reversed(before) if line.strip()), "")
    indent = len(last) - len(last.lstrip())
    return " " * indent + first if indent >= 2 else first


def _overlap(before: list[str], new: list[str]) -> int:
    """How many leading lines of ``new`` repeat the end of ``before`` (0 if none). A short
    repeat (a lone fence, "fi", "}") is more likely two real lines than an overlap."""
    for k in range(min(len(before), len(new)), 0, -1):
        tail, head = before[-k:], new[:k]
        if (
            tail[1:] == head[1:]
            and tail[0].endswith(head[0])
            and not _FENCE.match(head[0])
            and len("".join(head).strip()) >= MIN_OVERLAP
        ):
            return k
    return 0
