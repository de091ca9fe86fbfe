"""The one connector protocol, and the Document every connector produces.

A connector only reads its source. It has three capabilities, mirroring what a sync needs:

- ``load_all()``: every document, for a first or full sync;
- ``changed_since(t)``: documents created or modified at or after ``t``, for incremental syncs;
- ``list_ids()``: the ids of all documents that exist now, cheap, so deletions can be pruned.

One more is optional, for sources where reading a few documents by id is cheap (wikis, sites):

- ``load(ids)``: the documents with these ids. Ids that no longer exist are simply not
  yielded; a document that cannot be read goes to ``problems`` as elsewhere. An incremental
  sync reads the listed ids it has not indexed yet (new, or failing so far) with it, after
  ``changed_since``. A connector without it gets ``load_all()`` whenever such ids exist,
  which is right for sources whose ``changed_since`` can miss a new document (a file
  copied in with an old modification time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo


@dataclass(frozen=True)
class Document:
    """One source document, as a connector read it."""

    connector: str
    id: str  # stable within the connector, e.g. a path relative to its root
    title: str
    url: str
    text: str
    last_modified: datetime
    audience: str = "public"
    # "markdown" or "text": tells the chunker whether headings can be trusted.
    format: str = "markdown"
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """A hash of what is embedded; a change here means re-chunking and re-embedding.

        The link and audience are not part of it: when only they change (a git link that
        names the new commit, say), the chunks' metadata is updated without re-embedding.
        """
        h = hashlib.sha256()
        for part in (self.title, self.format, self.text):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()


class ConnectorError(Exception):
    """The source cannot be read as a whole (down, unreachable, misconfigured)."""


class DocumentError(Exception):
    """One document cannot be read; the sync skips it and reports it."""

    def __init__(self, doc_id: str, reason: str):
        super().__init__(f"{doc_id}: {reason}")
        self.doc_id = doc_id
        self.reason = reason


class ConnectorConfig(BaseModel):
    """Keys every connector has. Each connector type subclasses this with its own keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    type: str
    schedule: str = "1h"
    audience: str = Field(default="public", pattern=r"^[A-Za-z0-9_.-]+$")

    def audiences(self) -> frozenset[str]:
        """Every audience this connector's documents can have. With one, the configured
        audience wins over the one stored with the chunks (a change takes effect at once);
        a connector that maps parts of its source to audiences returns them all."""
        return frozenset({self.audience})


@runtime_checkable
class Connector(Protocol):
    """What the indexer asks of a source (and, optionally, ``load(ids)``: see above)."""

    type_name: ClassVar[str]
    config: ConnectorConfig
    # Problems with single documents seen during the last call, reported by the sync.
    problems: list[DocumentError]

    def load_all(self) -> Iterator[Document]: ...

    def changed_since(self, since: datetime) -> Iterator[Document]: ...

    def list_ids(self) -> set[str]: ...


def state_dir(workdir: Path | None, kind: str) -> Path:
    """Where connectors of type ``kind`` keep what they carry from one sync to the next (a
    checkout, a page mirror): below the data dir, or ./.kbot when built without one."""
    return (workdir or Path.cwd() / ".kbot") / kind


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the folder of the config file that named it."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value.resolve()
