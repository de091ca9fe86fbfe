"""`kbot connectors test NAME`: reach one connector's source, fetch one document, and show what
would be indexed, without writing to the index, the database or kbot's data dir.

The connector runs in a temporary working folder (a git clone, a connector's state file), so
a check never disturbs the next real sync. It asks for the first document of ``load_all``
and stops there: listing every id first could mean crawling a whole site.
"""

from __future__ import annotations

import tempfile
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from config.models import KbotConfig
from connectors import ConnectorError, Document, build_connector
from indexer.chunking import Chunker

PREVIEW_CHARS = 300


@dataclass
class CheckResult:
    """The outcome of one check (the shape of ``kbot connectors test --json``)."""

    name: str
    type: str
    ok: bool
    error: str | None = None
    document: dict[str, Any] | None = None
    chunks: int = 0
    first_chunk: dict[str, str] | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check_connector(config: KbotConfig, name: str) -> CheckResult:
    """Check connector ``name``. Raises KeyError (listing the configured names) if unknown."""
    cfg = config.connector(name)
    result = CheckResult(name=cfg.name, type=cfg.type, ok=False)
    with tempfile.TemporaryDirectory(prefix="kbot-connector-test-") as tmp:
        connector = build_connector(cfg, Path(tmp))
        try:
            docs = iter(connector.load_all())
            try:
                doc = next(docs, None)
            finally:
                # A generator stopped early still closes its connections.
                close = getattr(docs, "close", None)
                if close is not None:
                    close()
        except ConnectorError as e:
            result.error = str(e)
            return result
        finally:
            result.problems = [str(p) for p in connector.problems]
    if doc is None:
        result.error = "reached the source, but it has no document to index" + (
            " (every document found was skipped)" if result.problems else ""
        )
        return result
    chunks = Chunker(config.indexer.chunk_size, config.indexer.chunk_overlap).split(doc)
    result.ok = True
    result.document = _describe(doc)
    result.chunks = len(chunks)
    if chunks:
        text = chunks[0].text
        start = text[:PREVIEW_CHARS] + ("…" if len(text) > PREVIEW_CHARS else "")
        result.first_chunk = {"heading": chunks[0].heading, "text": start}
    return result


def _describe(doc: Document) -> dict[str, Any]:
    return {
        "id": doc.id,
        "title": doc.title,
        "url": doc.url,
        "audience": doc.audience,
        "format": doc.format,
        "last_modified": doc.last_modified.isoformat(timespec="seconds"),
        "characters": len(doc.text),
    }


def format_result(r: CheckResult) -> str:
    """The human-readable report of a successful check."""
    assert r.document is not None
    d = r.document
    lines = [
        f"{r.name} ({r.type}): reachable; the first document would be indexed as:",
        f"  id             {d['id']}",
        f"  title          {d['title']}",
        f"  url            {d['url']}",
        f"  audience       {d['audience']}",
        f"  format         {d['format']}",
        f"  last modified  {d['last_modified']}",
        f"  text           {d['characters']} characters, {r.chunks} chunk(s)",
    ]
    if r.first_chunk is not None:
        lines.append(f"  first chunk    {r.first_chunk['heading']}")
        lines.append(textwrap.indent(r.first_chunk["text"], "    | ", lambda _: True))
    lines.append("nothing was written to the index")
    return "\n".join(lines)
