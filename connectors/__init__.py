"""Connectors read knowledge sources. Each type lives in its own module and registers here."""

from __future__ import annotations

from pathlib import Path

from connectors.base import (
    Connector,
    ConnectorConfig,
    ConnectorError,
    Document,
    DocumentError,
)
from connectors.confluence import ConfluenceConfig, ConfluenceConnector
from connectors.filesystem import FilesystemConfig, FilesystemConnector
from connectors.git import GitConfig, GitConnector
from connectors.mediawiki import MediaWikiConfig, MediaWikiConnector
from connectors.web import WebConfig, WebConnector

# type name -> (config model, connector class). A new connector adds one line here.
REGISTRY: dict[str, tuple[type[ConnectorConfig], type]] = {
    "confluence": (ConfluenceConfig, ConfluenceConnector),
    "filesystem": (FilesystemConfig, FilesystemConnector),
    "git": (GitConfig, GitConnector),
    "mediawiki": (MediaWikiConfig, MediaWikiConnector),
    "web": (WebConfig, WebConnector),
}


def build_connector(config: ConnectorConfig, workdir: Path) -> Connector:
    """A fresh connector for one sync run."""
    _, cls = REGISTRY[config.type]
    return cls(config, workdir)


__all__ = [
    "REGISTRY",
    "Connector",
    "ConnectorConfig",
    "ConnectorError",
    "Document",
    "DocumentError",
    "build_connector",
]
