"""The ``filesystem`` connector: a folder of Markdown, text, HTML and reStructuredText files."""

from __future__ import annotations

import fnmatch
import os
import string
from collections import Counter
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
from connectors.parsing import DEFAULT_INCLUDE, file_format, file_type, parse


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
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"malformed template ({e})") from e
    unknown = used - allowed
    if unknown:
        valid = ", ".join("{" + a + "}" for a in sorted(allowed))
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; valid: {valid}")
    return template


def matches(rel: str, include: list[str], exclude: list[str]) -> bool:
    """fnmatch-style globs (``*`` crosses folders) where ``**/`` also matches no folder at all.

    So ``**/*.md`` matches ``README.md`` and ``docs/**/*.md`` matches ``docs/a.md``.
    """

    def hit(pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, v) for v in _zero_folder_variants(pattern))

    return any(hit(p) for p in include) and not any(hit(p) for p in exclude)


def _zero_folder_variants(pattern: str) -> list[str]:
    """The pattern with each ``**/`` kept or dropped, in every combination."""
    head, sep, tail = pattern.partition("**/")
    if not sep:
        return [pattern]
    rest = _zero_folder_variants(tail)
    return [head + sep + r for r in rest] + [head + r for r in rest]


def read_document(
    root: Path,
    rel: str,
    *,
    connector: str,
    audience: str,
    url: str,
    last_modified: datetime,
) -> Document:
    """Read and parse one file below ``root``; a front-matter ``url`` wins over ``url``.

    A symbolic link that leads outside ``root`` is refused: a repository or synced folder
    must not be able to pull, say, ``~/.ssh`` or a config file full of secrets into the index.
    """
    path = root / rel
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError as e:
        reason = "broken symbolic link" if path.is_symlink() else "file disappeared while syncing"
        raise DocumentError(rel, f"{reason}, skipped") from e
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
        raise DocumentError(rel, f"cannot resolve path ({e})") from e
    if not real.is_relative_to(root.resolve()):
        raise DocumentError(rel, "symbolic link to a file outside the source folder, skipped")
    try:
        raw = real.read_bytes()
    except FileNotFoundError as e:
        raise DocumentError(rel, "file disappeared while syncing, skipped") from e
    except OSError as e:
        raise DocumentError(rel, f"cannot read file ({e.strerror})") from e
    parsed = parse(rel, raw)
    front_url = parsed.front_matter.get("url")
    # Only web links: the URL is rendered as a clickable citation in chat.
    if isinstance(front_url, str) and front_url.strip().lower().startswith(("http://", "https://")):
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


def read_or_report(
    problems: list[DocumentError],
    config: ConnectorConfig,
    root: Path,
    rel: str,
    url: str,
    mtime: float,
) -> Document | None:
    """``read_document``, with a file that cannot be read recorded in ``problems``."""
    try:
        return read_document(
            root,
            rel,
            connector=config.name,
            audience=config.audience,
            url=url,
            last_modified=datetime.fromtimestamp(mtime, UTC),
        )
    except DocumentError as e:
        problems.append(e)
        return None


class FilesystemConnector:
    """Reads a folder. A document's id is its path relative to ``path``, with ``/`` separators."""

    type_name: ClassVar[str] = "filesystem"

    def __init__(self, config: FilesystemConfig, workdir: Path | None = None):
        self.config = config
        self.problems: list[DocumentError] = []
        # Files that ``include`` matched but kbot cannot read, by type (".erb": 12).
        self.skipped: dict[str, int] = {}

    def _files(self) -> list[tuple[str, Path]]:
        """Matching files, sorted by id. Hidden files and folders (``.git``, ...) are skipped."""
        root = self.config.path
        if not root.is_dir():
            raise ConnectorError(f"folder {str(root)!r} does not exist or is not readable")
        found: list[tuple[str, Path]] = []
        skipped: Counter[str] = Counter()
        for folder, dirs, files in os.walk(root):
            # Pruned in place so os.walk never descends into hidden folders.
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                p = Path(folder) / name
                rel = p.relative_to(root).as_posix()
                if not matches(rel, self.config.include, self.config.exclude):
                    continue
                if not file_format(rel):
                    skipped[file_type(rel)] += 1
                elif p.is_file():
                    found.append((rel, p))
        self.skipped = dict(sorted(skipped.items()))
        return sorted(found)

    def _read(self, rel: str, mtime: float) -> Document | None:
        c = self.config
        if c.url_template:
            url = c.url_template.format(path=quote(rel))
        else:
            url = (c.path / rel).resolve().as_uri()
        return read_or_report(self.problems, c, c.path, rel, url, mtime)

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
            if mtime is None:
                self.problems.append(DocumentError(rel, "file disappeared while syncing, skipped"))
            elif mtime >= cutoff:
                doc = self._read(rel, mtime)
                if doc is not None:
                    yield doc

    def list_ids(self) -> set[str]:
        return {rel for rel, _ in self._files()}
