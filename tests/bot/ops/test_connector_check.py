"""`kbot connectors test NAME` through the real CLI, against a folder and against a local
server speaking Confluence's REST API: what it prints, and that it writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from bot.cli import cli
from bot.runtime import Runtime
from config import load_config
from db.models import IndexedDocument, SyncRun
from tests.connectors.fake_confluence import DC_TOKEN, FakeConfluence

RESULT_KEYS = {"name", "type", "ok", "error", "document", "chunks", "first_chunk", "problems"}
DOC_KEYS = {"id", "title", "url", "audience", "format", "last_modified", "characters"}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("connectors.http.sleep", lambda _s: None)


@pytest.fixture
def wiki() -> Iterator[FakeConfluence]:
    fake = FakeConfluence("dc", max_limit=2).start()
    fake.add_space("OPS", "Operations")
    home = fake.add_page("OPS", "Operations Home", "<p>Welcome.</p>")
    fake.add_page(
        "OPS",
        "Restart the payments API",
        "<h2>Steps</h2><p>Run <code>systemctl restart payments-api</code> on each node.</p>",
        parent=home.id,
    )
    for i in range(4):
        fake.add_page("OPS", f"Note {i}", f"<p>Note {i}.</p>", parent=home.id)
    yield fake
    fake.stop()


def write_config(tmp_path: Path, wiki: FakeConfluence | None = None) -> Path:
    kb = tmp_path / "kb"
    kb.mkdir(exist_ok=True)
    (kb / "coffee-machine.md").write_text(
        "# Descaling the coffee machine\n\nThe espresso machine needs descaling every second "
        "Friday. Fill the tank with the citric descaler.\n",
        encoding="utf-8",
    )
    (kb / "parking.md").write_text("# Bicycle parking\n\nBicycles go in the basement.\n")
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "empty" / "broken.md").write_bytes(b"\x00\x01binary")
    text = """\
storage:
  data_dir: data
connectors:
  - name: handbook
    type: filesystem
    path: kb
    url_template: https://handbook.example/{path}
  - name: nothing
    type: filesystem
    path: empty
"""
    if wiki is not None:
        text += f"""\
  - name: wiki
    type: confluence
    base_url: {wiki.site}
    space_keys: [OPS]
    token: ${{CONF_TOKEN}}
    audience: staff
    space_audiences:
      OPS: sre
"""
    path = tmp_path / "kbot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def kbot(config: Path, *args: str, **kw: Any) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="kbot", **kw)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def index_counts(config: Path) -> tuple[int, int, int]:
    rt = Runtime(load_config(config))
    try:
        with rt.db.session() as s:
            docs = s.scalar(select(func.count()).select_from(IndexedDocument))
            runs = s.scalar(select(func.count()).select_from(SyncRun))
        return rt.store.count(), docs, runs
    finally:
        rt.close()


def test_filesystem_connector_check_writes_nothing(tmp_path, embedder):
    config = write_config(tmp_path)
    sync = kbot(config, "sync", "handbook", "--json")
    assert sync.exit_code == 0, sync.output
    before_counts = index_counts(config)
    assert before_counts[0] > 0 and before_counts[1:] == (2, 1)
    data = tmp_path / "data"
    before = snapshot(data)

    text = kbot(config, "connectors", "test", "handbook")
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert out.startswith("handbook (filesystem): reachable; the first document would be indexed")
    assert "  id             coffee-machine.md\n" in out
    assert "  title          Descaling the coffee machine\n" in out
    assert "  url            https://handbook.example/coffee-machine.md\n" in out
    assert "  audience       public\n" in out and "  format         markdown\n" in out
    assert "1 chunk(s)" in out and "    | # Descaling the coffee machine" in out
    assert out.rstrip().endswith("nothing was written to the index")

    as_json = kbot(config, "connectors", "test", "handbook", "--json")
    assert as_json.exit_code == 0, as_json.output
    r = json.loads(as_json.stdout)
    assert set(r) == RESULT_KEYS and set(r["document"]) == DOC_KEYS
    assert (r["ok"], r["error"], r["chunks"], r["problems"]) == (True, None, 1, [])
    assert r["document"]["id"] == "coffee-machine.md"
    assert r["first_chunk"]["heading"] == "Descaling the coffee machine"
    assert "citric descaler" in r["first_chunk"]["text"]

    assert snapshot(data) == before
    assert index_counts(config) == before_counts


def test_confluence_connector_check_fetches_one_page(tmp_path, wiki):
    config = write_config(tmp_path, wiki)
    result = kbot(config, "connectors", "test", "wiki", env={"CONF_TOKEN": DC_TOKEN})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("wiki (confluence): reachable; the first document would be indexed")
    assert "  title          Operations Home\n" in out
    assert f"  url            {wiki.site}/display/OPS/Operations+Home\n" in out
    assert "  audience       sre\n" in out  # from space_audiences
    assert "  last modified  2024-01-10T09:30:00+00:00\n" in out

    result = kbot(config, "connectors", "test", "wiki", "--json", env={"CONF_TOKEN": DC_TOKEN})
    r = json.loads(result.stdout)
    assert r["ok"] and r["document"]["title"] == "Operations Home"
    assert r["first_chunk"] == {"heading": "Operations Home", "text": "Welcome."}
    # One document, then it stopped: the second page of the listing was never asked for.
    listing = wiki.api_requests("/rest/api/content")
    assert listing and all("start" not in req.query for req in listing)
    # No state file, no database, no index: the data dir was never created.
    assert not (tmp_path / "data").exists()


def test_auth_failure_is_printed_clearly_with_exit_code_1(tmp_path, wiki):
    config = write_config(tmp_path, wiki)
    env = {"CONF_TOKEN": "pat-revoked-zz"}
    result = kbot(config, "connectors", "test", "wiki", env=env)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(
        "wiki (confluence): FAILED: Confluence connector 'wiki': authentication failed at "
    )
    assert "check token" in result.stderr and "Traceback" not in result.output
    assert "pat-revoked-zz" not in result.output

    result = kbot(config, "connectors", "test", "wiki", "--json", env=env)
    assert result.exit_code == 1
    r = json.loads(result.stdout)
    assert r["ok"] is False and r["document"] is None and "HTTP 401" in r["error"]
    assert "pat-revoked-zz" not in result.output


def test_unknown_name_lists_the_configured_ones(tmp_path):
    config = write_config(tmp_path)
    result = kbot(config, "connectors", "test", "wikki")
    assert result.exit_code == 2
    assert "no connector named 'wikki'" in result.stderr
    assert "(configured: handbook, nothing)" in result.stderr


def test_a_source_with_nothing_to_index_fails_and_shows_what_was_skipped(tmp_path):
    config = write_config(tmp_path)
    result = kbot(config, "connectors", "test", "nothing")
    assert result.exit_code == 1
    assert "skipped broken.md: looks like a binary file" in result.stderr
    assert (
        "nothing (filesystem): FAILED: reached the source, but it has no document to index "
        "(every document found was skipped)" in result.stderr
    )
