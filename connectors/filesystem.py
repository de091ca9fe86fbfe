"""The ``filesystem`` connector: a folder of Markdown, text, HTML and reStructuredText files."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, ValidationInfo, field_validator

from connectors.base import (
    ConnectorConfig,
    ConnectorError,
    Document,
    DocumentError,
    resolve_path,
)
from connectors.parsing import DEFAULT_INCLUDE, file_format, parse


class FilesystemConfig(ConnectorConfig):
    type: Literal["filesystem"]
    path: Path
    url_template: str | None = Field(
        default=None, description="e.g. https://github.com/acme/runbooks/blob/main/{path}"
    )
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path_is_a_folder(cls, v: Path, info: ValidationInfo) -> Path:
        v = resolve_path(v, info)
        if not v.is_dir():
            raise ValueError(f"folder {str(v)!r} does not exist (or is not a folder)")
        return v

    @field_validator("url_template")
    @classmethod
    def _template_fields(cls, v: str | None) -> str | None:
        return check_template(v, {"path"})


def check_template(template: str | None, allowed: set[str]) -> str | None:
    """Validate a ``{field}`` URL template against the fields a connector can fill in."""
    if template is None:
        return None
    import string

    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"malformed template ({e})") from e
    unknown = used - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)}; valid: {sorted('{' + a + '}' for a in allowed)}"
        )
    return template


def matches(rel: str, include: list[str], exclude: list[str]) -> bool:
    """Glob matching where ``**/`` also matches the top folder."""

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatch(rel, pattern) or (
            pattern.startswith("**/") and fnmatch.fnmatch(rel, pattern[3:])
        )

    return any(hit(p) for p in include) and not any(hit(p) for p in exclude)


def read_document(
    root: Path,
    rel: str,
    *,
    connector: str,
    audience: str,
    url: str,
    last_modified: datetime,
) -> Document:
    """Read and parse one file below ``root``; a front-matter ``url`` wins over ``url``."""
    try:
        raw = (root / rel).read_bytes()
    except FileNotFoundError as e:
        raise DocumentError(rel, "file disappeared while syncing, skipped") from e
    except OSError as e:
        raise DocumentError(rel, f"cannot read file ({e.strerror})") from e
    parsed = parse(rel, raw)
    front_url = parsed.front_matter.get("url")
    if isinstance(front_url, str) and front_url.strip():
        url = front_url.strip()
    return Document(
        connector=connector,
        id=rel,
        title=parsed.title,
        url=url,
        text=parsed.text,
        last_modified=last_modified,
        audience=audience,
        format=parsed.format,
    )


class FilesystemConnector:
    """Reads a folder. A document's id is its path relative to ``path``, with ``/`` separators."""

    type_name: ClassVar[str] = "filesystem"

    def __init__(self, config: FilesystemConfig, workdir: Path | None = None):
        self.config = config
        self.problems: list[DocumentError] = []

    def _files(self) -> Iterator[tuple[str, Path]]:
        root = self.config.path
        if not root.is_dir():
            raise ConnectorError(f"folder {str(root)!r} does not exist or is not readable")
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if any(part.startswith(".") for part in p.relative_to(root).parts):
                continue
            if file_format(rel) and matches(rel, self.config.include, self.config.exclude):
                if p.is_file():
                    yield rel, p

    def _read(self, rel: str, mtime: float) -> Document | None:
        c = self.config
        if c.url_template:
            url = c.url_template.format(path=quote(rel))
        else:
            url = (c.path / rel).resolve().as_uri()
        try:
            return read_document(
                c.path,
                rel,
                connector=c.name,
                audience=c.audience,
                url=url,
                last_modified=datetime.fromtimestamp(mtime, UTC),
            )
        except DocumentError as e:
            self.problems.append(e)
            return None

    def _stat(self, p: Path) -> float | None:
        try:
            return p.stat().st_mtime
        except OSError:
            return None  # deleted between listing and reading

    def load_all(self) -> Iterator[Document]:
        self.problems = []
        for rel, p in self._files():
            mtime = self._stat(p)
            if mtime is None:
                self.problems.append(DocumentError(rel, "file disappeared while syncing, skipped"))
                continue
            doc = self._read(rel, mtime)
            if doc is not None:
                yield doc

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.problems = []
        cutoff = since.timestamp()
        for rel, p in self._files():
            mtime = self._stat(p)
            if mtime is not None and mtime >= cutoff:
                doc = self._read(rel, mtime)
                if doc is not None:
                    yield doc

    def list_ids(self) -> set[str]:
        return {rel for rel, _ in self._files()}
