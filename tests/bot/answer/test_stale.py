"""A cited document older than answering.stale_after says so beside its citation, on every
surface, and a fresh one says nothing."""

from __future__ import annotations

import json
import os
import time
from datetime import date

import pytest
from click.testing import CliRunner

from bot.answer.types import Citation
from bot.chat.slack_blocks import answer_messages
from bot.chat.teams_cards import answer_card
from bot.cli.main import cli
from tests.conftest import make_config

DAY = 86400


def _cite(updated: str) -> Citation:
    return Citation(1, "Old runbook", "https://wiki/old", "kb", "old.md", updated=updated)


@pytest.mark.parametrize(
    ("updated", "after", "note"),
    [
        ("2025-12-05", 365, ""),  # exactly a year: not yet
        ("2025-12-04", 365, "last updated 12 months ago"),
        ("2025-10-01", 365, "last updated 14 months ago"),
        ("2023-11-20", 365, "last updated 3 years ago"),
        ("2023-11-20", 0, ""),  # switched off
        ("2026-11-01", 30, "last updated 1 month ago"),
        ("", 365, ""),  # unknown date
    ],
)
def test_the_age_note(updated, after, note):
    assert _cite(updated).aged(date(2026, 12, 5), after).stale == note


def test_slack_and_teams_show_the_note_beside_the_citation():
    from bot.answer.types import Answer

    cite = _cite("2025-10-01").aged(date(2026, 12, 5), 365)
    answer = Answer("q1", "How?", "Do this [1].", False, [cite])
    slack = json.dumps(answer_messages(answer), ensure_ascii=False)
    assert "[1] <https://wiki/old|Old runbook> · kb: old.md · _last updated 14 months ago_" in slack
    card = json.dumps(answer_card(answer), ensure_ascii=False)
    assert "kb · old.md · last updated 14 months ago" in card


def test_an_old_document_is_flagged_in_the_answer_and_a_fresh_one_is_not(tmp_path, runtime_factory):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "old.md").write_text(
        "# Rotating the queue password\n\n1. Run `mq rotate --user app`.\n"
        "2. Restart the consumers with `kubectl rollout restart deploy/consumer`.\n"
    )
    (kb / "new.md").write_text(
        "# Resizing the orders volume\n\n1. Run `kubectl edit pvc orders-data`.\n"
        "2. Set `spec.resources.requests.storage` to the new size.\n"
    )
    old = time.time() - 425 * DAY
    os.utime(kb / "old.md", (old, old))
    config = make_config(tmp_path, [{"name": "kb", "type": "filesystem", "path": str(kb)}])
    rt = runtime_factory(config)
    assert rt.indexer.sync()[0].ok

    stale = rt.answering.ask("How do I rotate the queue password?")
    assert not stale.abstained
    assert stale.citations[0].path == "old.md"
    assert stale.citations[0].stale == "last updated 14 months ago"
    fresh = rt.answering.ask("How do I resize the orders volume?")
    assert fresh.citations[0].path == "new.md" and fresh.citations[0].stale == ""

    cfg = tmp_path / "kbot.yaml"
    cfg.write_text(
        f"storage:\n  data_dir: {config.storage.data_dir}\n"
        f"connectors:\n  - name: kb\n    type: filesystem\n    path: {kb}\n"
    )
    rt.close()
    out = CliRunner().invoke(
        cli, ["--config", str(cfg), "ask", "How do I rotate the queue password?"]
    )
    assert out.exit_code == 0, out.output
    assert "(kb: old.md) · last updated 14 months ago" in out.output
    as_json = CliRunner().invoke(
        cli, ["--config", str(cfg), "ask", "--json", "How do I rotate the queue password?"]
    )
    [c] = [c for c in json.loads(as_json.stdout)["citations"] if c["path"] == "old.md"]
    assert c["stale"] == "last updated 14 months ago"
