"""The filesystem connector over real folders in tmp_path."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.loader import ConfigError, load_config
from connectors import Connector, build_connector
from connectors.base import ConnectorError
from connectors.filesystem import FilesystemConfig, FilesystemConnector, matches

T_OLD = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
T_NEW = datetime(2024, 6, 1, tzinfo=UTC).timestamp()


def write(root: Path, rel: str, text: str | bytes, mtime: float | None = T_OLD) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def connector(root: Path, **extra: Any) -> FilesystemConnector:
    cfg = FilesystemConfig.model_validate(
        {"name": "docs", "type": "filesystem", "path": root, **extra}
    )
    return FilesystemConnector(cfg)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "docs"
    write(r, "README.md", "# Read me\n\nTop level.\n")
    write(r, "runbooks/disk full.md", "# Disk full\n\nFree space.\n")
    write(r, "runbooks/db/restore.rst", "Restore\n=======\n\nSteps.\n")
    write(r, "wiki/page.html", "<title>Wiki page</title><p>Hello</p>")
    write(r, "notes.txt", "plain notes\n")
    write(r, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    return r


def test_is_a_connector(root: Path, tmp_path: Path) -> None:
    cfg = FilesystemConfig.model_validate({"name": "docs", "type": "filesystem", "path": root})
    c = build_connector(cfg, tmp_path / "data")
    assert isinstance(c, FilesystemConnector)
    assert isinstance(c, Connector)


def test_load_all_ids_titles_formats_and_dates(root: Path) -> None:
    docs = {d.id: d for d in connector(root).load_all()}
    assert sorted(docs) == [
        "README.md",
        "notes.txt",
        "runbooks/db/restore.rst",
        "runbooks/disk full.md",
        "wiki/page.html",
    ]
    assert docs["runbooks/disk full.md"].title == "Disk full"
    assert docs["runbooks/db/restore.rst"].title == "Restore"
    assert docs["wiki/page.html"].title == "Wiki page"
    assert (docs["notes.txt"].title, docs["notes.txt"].format) == ("notes", "text")
    assert docs["README.md"].text == "# Read me\n\nTop level."
    d = docs["README.md"]
    assert (d.connector, d.audience) == ("docs", "public")
    assert d.last_modified == datetime.fromtimestamp(T_OLD, UTC)


def test_default_link_is_a_file_uri(root: Path) -> None:
    docs = {d.id: d for d in connector(root).load_all()}
    assert docs["runbooks/disk full.md"].url == (root / "runbooks" / "disk full.md").as_uri()
    assert docs["runbooks/disk full.md"].url.startswith("file:///")


def test_url_template_fills_in_the_quoted_path(root: Path) -> None:
    c = connector(root, url_template="https://git.example.com/docs/blob/main/{path}")
    docs = {d.id: d for d in c.load_all()}
    assert docs["runbooks/disk full.md"].url == (
        "https://git.example.com/docs/blob/main/runbooks/disk%20full.md"
    )


def test_front_matter_url_wins_over_template(root: Path) -> None:
    write(root, "pinned.md", "---\nurl: https://wiki.example.com/pinned\n---\nBody\n")
    write(root, "unsafe.md", "---\nurl: 'javascript:alert(1)'\n---\nBody\n")
    c = connector(root, url_template="https://git.example.com/{path}")
    docs = {d.id: d for d in c.load_all()}
    assert docs["pinned.md"].url == "https://wiki.example.com/pinned"
    # Only web links are taken from front matter: the URL becomes a clickable citation.
    assert docs["unsafe.md"].url == "https://git.example.com/unsafe.md"
    docs = {d.id: d for d in connector(root).load_all()}
    assert docs["pinned.md"].url == "https://wiki.example.com/pinned"


def test_audience_is_carried(root: Path) -> None:
    docs = list(connector(root, audience="sre-only").load_all())
    assert docs and {d.audience for d in docs} == {"sre-only"}


def test_include_with_double_star_matches_top_level_files(root: Path) -> None:
    assert connector(root, include=["**/*.md"]).list_ids() == {"README.md", "runbooks/disk full.md"}
    assert connector(root, include=["runbooks/**/*.rst"]).list_ids() == {"runbooks/db/restore.rst"}


def test_exclude_globs(root: Path) -> None:
    assert connector(root, exclude=["README.md", "runbooks/**"]).list_ids() == {
        "notes.txt",
        "wiki/page.html",
    }
    # A top-level exclude does not reach into folders.
    write(root, "wiki/README.md", "# Wiki readme\n")
    assert "wiki/README.md" in connector(root, exclude=["README.md"]).list_ids()


def test_include_never_admits_unsupported_types(root: Path) -> None:
    assert "image.png" not in connector(root, include=["**/*"]).list_ids()


def test_files_include_matched_but_kbot_cannot_read_are_counted_by_type(root: Path) -> None:
    write(root, "source/index.html.erb", "<%= yield %>")
    write(root, "source/a.html.md.erb", "---\ntitle: A\n---\n# <%= current_page.data.title %>\n")
    c = connector(root, include=["**/*"])
    assert "source/a.html.md.erb" in c.list_ids()
    assert c.skipped == {".erb": 1, ".png": 1}
    # Only what include asked for is counted: the default globs never name a .png.
    d = connector(root)
    d.list_ids()
    assert d.skipped == {}


def test_hidden_files_and_folders_are_skipped(root: Path) -> None:
    write(root, ".git/notes.md", "# git internals\n")
    write(root, "wiki/.obsidian/workspace.md", "# editor state\n")
    write(root, ".hidden.md", "# hidden\n")
    ids = connector(root).list_ids()
    assert not {i for i in ids if "/." in "/" + i}
    assert len(ids) == 5


def test_matches_double_star_semantics() -> None:
    assert matches("a.md", ["**/*.md"], [])
    assert matches("x/y/a.md", ["**/*.md"], [])
    assert matches("docs/a.md", ["docs/**/*.md"], [])
    assert matches("docs/x/y/a.md", ["docs/**/*.md"], [])
    assert not matches("other/a.md", ["docs/**/*.md"], [])
    assert matches("a/b/c.md", ["a/**/b/**/*.md"], [])
    assert not matches("a.md", ["**/*.md"], ["**/*"])
    assert not matches("A.MD", ["**/*.md"], [])  # globs are case-sensitive


def test_changed_since_uses_mtime(root: Path) -> None:
    os.utime(root / "notes.txt", (T_NEW, T_NEW))
    os.utime(root / "wiki" / "page.html", (T_NEW + 5, T_NEW + 5))
    c = connector(root)
    since = datetime.fromtimestamp(T_NEW, UTC)
    changed = {d.id: d for d in c.changed_since(since)}
    assert set(changed) == {"notes.txt", "wiki/page.html"}
    assert changed["wiki/page.html"].last_modified == datetime.fromtimestamp(T_NEW + 5, UTC)
    assert list(c.changed_since(datetime(2030, 1, 1, tzinfo=UTC))) == []
    assert len(list(c.changed_since(datetime(2000, 1, 1, tzinfo=UTC)))) == 5


def test_list_ids_includes_unreadable_documents_but_load_reports_them(root: Path) -> None:
    write(root, "broken.md", b"# Title\n\x00binary")
    write(root, "latin.txt", "caf\xe9".encode("latin-1"))
    c = connector(root)
    assert {"broken.md", "latin.txt"} <= c.list_ids()
    ids = {d.id for d in c.load_all()}
    assert "broken.md" not in ids and "latin.txt" not in ids
    reasons = {p.doc_id: p.reason for p in c.problems}
    assert "binary" in reasons["broken.md"]
    assert "UTF-8" in reasons["latin.txt"]
    # Problems are per call: a later call starts afresh.
    list(c.changed_since(datetime(2030, 1, 1, tzinfo=UTC)))
    assert c.problems == []


def test_file_deleted_between_listing_and_reading_is_a_problem(root: Path) -> None:
    c = connector(root)
    docs = c.load_all()
    first = next(docs)  # the listing is taken before the first document is read
    assert first.id == "README.md"
    (root / "runbooks" / "disk full.md").unlink()
    rest = [d.id for d in docs]
    assert "runbooks/disk full.md" not in rest
    assert rest == ["notes.txt", "runbooks/db/restore.rst", "wiki/page.html"]
    assert [(p.doc_id, p.reason) for p in c.problems] == [
        ("runbooks/disk full.md", "file disappeared while syncing, skipped")
    ]


def test_file_deleted_during_changed_since_is_a_problem(root: Path) -> None:
    c = connector(root)
    docs = c.changed_since(datetime(2000, 1, 1, tzinfo=UTC))
    next(docs)
    (root / "wiki" / "page.html").unlink()
    assert [d.id for d in docs] == ["notes.txt", "runbooks/db/restore.rst", "runbooks/disk full.md"]
    assert [p.doc_id for p in c.problems] == ["wiki/page.html"]


def test_symlink_leading_outside_the_folder_is_refused(root: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "outside", "secret.md", "# Secret\n\ntoken=abc\n")
    (root / "leak.md").symlink_to(secret)
    (root / "alias.md").symlink_to(root / "README.md")
    c = connector(root)
    docs = {d.id: d for d in c.load_all()}
    assert "leak.md" not in docs
    assert docs["alias.md"].text == "# Read me\n\nTop level."
    assert [p.doc_id for p in c.problems] == ["leak.md"]
    assert "outside" in c.problems[0].reason


def test_folder_removed_after_validation_is_a_connector_error(root: Path, tmp_path: Path) -> None:
    c = connector(root)
    root.rename(tmp_path / "moved")
    with pytest.raises(ConnectorError, match="does not exist"):
        c.list_ids()


def test_missing_folder_is_a_validation_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValidationError) as e:
        FilesystemConfig.model_validate({"name": "d", "type": "filesystem", "path": missing})
    assert str(missing) in str(e.value)
    assert "does not exist" in str(e.value)
    f = write(tmp_path, "file.md", "x")
    with pytest.raises(ValidationError, match="not a folder"):
        FilesystemConfig.model_validate({"name": "d", "type": "filesystem", "path": f})


def test_unknown_template_placeholder_is_rejected(root: Path) -> None:
    with pytest.raises(ValidationError) as e:
        connector(root, url_template="https://x/{commit}/{path}")
    assert "commit" in str(e.value) and "{path}" in str(e.value)
    with pytest.raises(ValidationError, match="malformed template"):
        connector(root, url_template="https://x/{path")


def test_relative_path_resolves_against_the_context_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "cfg" / "kb", "a.md", "# A\n")
    monkeypatch.chdir(tmp_path)  # "kb" does not exist relative to the cwd
    cfg = FilesystemConfig.model_validate(
        {"name": "d", "type": "filesystem", "path": "kb"},
        context={"base_dir": tmp_path / "cfg"},
    )
    assert cfg.path == tmp_path / "cfg" / "kb"
    assert FilesystemConnector(cfg).list_ids() == {"a.md"}


def test_config_file_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "etc" / "knowledge", "guide.md", "# Guide\n")
    (tmp_path / "etc" / "kbot.yaml").write_text(
        "connectors:\n"
        "  - {name: kb, type: filesystem, path: knowledge}\n"
        "  - {name: gone, type: filesystem, path: missing-folder}\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "etc" / "kbot.yaml", env={})
    msg = str(e.value)
    assert "connector 'gone'" in msg
    assert str(tmp_path / "etc" / "missing-folder") in msg
    assert "connector 'kb'" not in msg

    (tmp_path / "etc" / "kbot.yaml").write_text(
        "connectors:\n  - {name: kb, type: filesystem, path: knowledge}\n"
    )
    config = load_config(tmp_path / "etc" / "kbot.yaml", env={})
    cfg = config.connector("kb")
    assert isinstance(cfg, FilesystemConfig)
    assert cfg.path == tmp_path / "etc" / "knowledge"
