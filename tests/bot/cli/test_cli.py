"""The real `kbot` CLI over a tiny knowledge folder: in-process with click's CliRunner (so the
session's embedding model is reused), plus one real subprocess for a bad config."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from bot.cli import cli
from config import load_config
from connectors import REGISTRY
from db import Database
from db.models import Feedback
from indexer.lock import WriterLock

# Three short documents written for these tests, each about one thing.
DOCS = {
    "coffee-machine.md": """\
# Descaling the coffee machine

The espresso machine in the third-floor kitchen needs descaling every second Friday.
Fill the tank with the citric descaler from the cupboard under the sink, then hold the
steam button for five seconds to start the descaling cycle. It takes about twenty minutes.
""",
    "lost-badge.md": """\
# Replacing a lost door badge

Report a lost door badge to reception at once so it can be blocked. Reception prints a
temporary visitor badge for the day; the replacement badge is ready after two working days.
""",
    "parking.md": """\
# Bicycle parking

Bicycles go in the basement rack behind the loading dock. The rack is opened with your
door badge. Electric bikes may be charged at the two sockets by the entrance.
""",
}
SYNC_KEYS = {
    "name",
    "skipped",
    "added",
    "updated",
    "deleted",
    "unchanged",
    "failed",
    "chunks",
    "error",
    "skipped_types",
}


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def write_config(tmp_path: Path, *, broken_git: bool = False) -> Path:
    text = """\
storage:
  data_dir: data
connectors:
  - name: handbook
    type: filesystem
    path: kb
    schedule: 15m
"""
    if broken_git:
        text += """\
  - name: broken
    type: git
    url: no-such-repo
    schedule: 0 * * * *
"""
    path = tmp_path / "kbot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path, kb: Path, embedder) -> Path:
    return write_config(tmp_path)


def kbot(config: Path | None, *args: str, **kw: Any) -> Result:
    prefix = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(cli, [*prefix, *args], prog_name="kbot", **kw)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def failed(result: Result) -> str:
    """The one-line error of a failed command (no traceback, nothing unexpected)."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.stderr


def sync_json(config: Path, *args: str, code: int = 0) -> dict[str, dict[str, Any]]:
    result = kbot(config, "sync", "--json", *args)
    assert result.exit_code == code, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert set(out) == {"connectors"}
    for row in out["connectors"]:
        assert set(row) == SYNC_KEYS
    return {row["name"]: row for row in out["connectors"]}


# -- sync ------------------------------------------------------------------------------------


def test_sync_json_counts_changes(config_file, kb):
    first = sync_json(config_file)["handbook"]
    chunks = first["chunks"]
    assert chunks >= 3
    assert first == {
        "name": "handbook",
        "added": 3,
        "updated": 0,
        "deleted": 0,
        "unchanged": 0,
        "failed": 0,
        "chunks": chunks,
        "error": None,
        "skipped": None,
        "skipped_types": {},
    }
    # A second invocation in the same process must get the writer lock again.
    second = sync_json(config_file)["handbook"]
    assert second == {**first, "added": 0, "unchanged": 3}

    (kb / "parking.md").write_text(DOCS["parking.md"] + "\nScooters park there too.\n")
    (kb / "lost-badge.md").unlink()
    third = sync_json(config_file)["handbook"]
    assert (third["added"], third["updated"], third["deleted"], third["unchanged"]) == (0, 1, 1, 1)
    assert third["chunks"] < chunks


def test_cli_releases_the_writer_lock(config_file):
    ok(kbot(config_file, "sync", "--json"))
    lock = WriterLock(load_config(config_file).storage.data_dir)
    lock.acquire()  # raises IndexLockedError if the CLI kept it
    lock.release()


def test_sync_text_output(config_file):
    result = ok(kbot(config_file, "sync"))
    assert re.search(
        r"^handbook: ok  added 3, updated 0, .* unchanged 0, failed 0; \d+ chunks$",
        result.stdout,
        re.M,
    )


def test_sync_says_how_many_matched_files_it_cannot_read(tmp_path, kb, embedder):
    (kb / "layout.html.erb").write_text("<%= yield %>", encoding="utf-8")
    (kb / "page.html.md.erb").write_text("# Page\n\nRead as Markdown.\n", encoding="utf-8")
    cfg = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text().replace("    path: kb\n", "    path: kb\n    include: ['**/*']\n")
    )
    result = ok(kbot(cfg, "sync"))
    assert "handbook: ok  added 4," in result.stdout
    assert "1 file matched `include` but kbot does not read its type, skipped (.erb 1)" in (
        result.stderr
    )
    data = json.loads(ok(kbot(cfg, "sync", "--json")).stdout)
    assert data["connectors"][0]["skipped_types"] == {".erb": 1}


def test_sync_unknown_name_fails_before_loading_anything(config_file):
    err = failed(kbot(config_file, "sync", "nope"))
    assert "no connector named 'nope'" in err
    assert "configured: handbook" in err
    assert not (config_file.parent / "data").exists()


def test_failing_connector_exits_1_and_the_others_still_sync(tmp_path, kb, embedder):
    config = write_config(tmp_path, broken_git=True)
    rows = sync_json(config, code=1)
    assert rows["handbook"]["added"] == 3 and rows["handbook"]["error"] is None
    broken = rows["broken"]
    assert broken["added"] == broken["chunks"] == 0
    assert "git clone" in broken["error"] and "no-such-repo" in broken["error"]

    text = kbot(config, "sync")
    assert text.exit_code == 1
    assert "handbook: ok" in text.stdout and "broken: FAILED" in text.stdout
    assert "error: git clone" in text.stderr

    only = sync_json(config, "handbook")
    assert list(only) == ["handbook"] and only["handbook"]["unchanged"] == 3


# -- ask ---------------------------------------------------------------------------------------


def test_ask_json_cites_the_right_document(config_file, kb):
    ok(kbot(config_file, "sync", "--json"))
    result = ok(kbot(config_file, "ask", "--json", "How do I descale the coffee machine?"))
    out = json.loads(result.stdout)
    assert {"query_id", "answer", "abstained", "citations", "latency_ms"} <= set(out)
    assert re.fullmatch(r"[0-9a-f]{32}", out["query_id"])
    assert out["abstained"] is False
    assert "descal" in out["answer"]
    first = out["citations"][0]
    assert set(first) == {"n", "title", "url", "connector", "path", "updated", "stale"}
    modified = datetime.fromtimestamp((kb / "coffee-machine.md").stat().st_mtime, UTC)
    assert first == {
        "n": 1,
        "title": "Descaling the coffee machine",
        "url": (kb / "coffee-machine.md").as_uri(),
        "connector": "handbook",
        "path": "coffee-machine.md",
        "updated": modified.date().isoformat(),
        "stale": "",
    }
    assert out["latency_ms"]["total"] >= 0


def test_ask_text_prints_sources_and_the_query_id(config_file):
    ok(kbot(config_file, "sync", "--json"))
    result = ok(kbot(config_file, "ask", "Where do bicycles park?"))
    assert "Sources:" in result.stdout
    assert "(handbook: parking.md)" in result.stdout
    assert re.search(r"kbot feedback add [0-9a-f]{32} up\|down", result.stderr)


@pytest.mark.parametrize("question", ["", "   "])
def test_ask_empty_question(config_file, question):
    err = failed(kbot(config_file, "ask", question))
    assert "The question is empty" in err


def test_ask_before_any_sync_says_to_sync(config_file):
    err = failed(kbot(config_file, "ask", "Where do bicycles park?"))
    assert "is empty; run `kbot sync` first" in err


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_is_recorded_and_changed(config_file):
    ok(kbot(config_file, "sync", "--json"))
    qid = json.loads(ok(kbot(config_file, "ask", "--json", "I lost my badge")).stdout)["query_id"]

    up = ok(kbot(config_file, "feedback", "add", qid, "up", "--reason", "x"))
    assert up.stdout.strip() == f"recorded up vote on {qid}"
    down = ok(kbot(config_file, "feedback", "add", qid, "down", "--reason", "outdated"))
    assert down.stdout.strip() == f"changed down vote on {qid}"

    db = Database(load_config(config_file).storage.sqlalchemy_url)
    try:
        with db.session() as s:
            rows = list(s.scalars(select(Feedback).where(Feedback.query_id == qid)))
    finally:
        db.dispose()
    assert [(r.vote, r.reason) for r in rows] == [("down", "outdated")]


def test_trace_shows_what_an_answer_was_made_from_and_its_feedback(config_file):
    ok(kbot(config_file, "sync", "--json"))
    asked = json.loads(ok(kbot(config_file, "ask", "--json", "I lost my badge")).stdout)
    qid = asked["query_id"]
    ok(kbot(config_file, "feedback", "add", qid, "down", "--reason", "outdated", "--user", "ann"))

    t = json.loads(ok(kbot(config_file, "trace", qid, "--json")).stdout)
    assert t["question"] == "I lost my badge"
    assert t["requester"] == {"platform": "cli", "channel": None, "user": None}
    assert t["answer"] == asked["answer"] and t["mode"] == "extractive"
    assert t["retrieved"][0]["path"] == "lost-badge.md"
    assert {"score", "dense", "lexical", "chunk_id"} <= set(t["retrieved"][0])
    assert set(t["latency_ms"]) >= {"retrieve", "total"}
    assert t["citations"][0]["path"] == "lost-badge.md"
    assert (t["model"], t["fallback_reason"], t["prompt"]) == (None, None, None)
    # How each cited source was quoted: one entry per citation, in citation order.
    assert [p["n"] for p in t["passages"]] == [c["n"] for c in t["citations"]]
    assert {p["how"] for p in t["passages"]} <= {"chosen", "whole", "unquoted", "cut"}
    assert [(f["user"], f["vote"], f["reason"]) for f in t["feedback"]] == [
        ("ann", "down", "outdated")
    ]

    text = ok(kbot(config_file, "trace", qid)).stdout
    assert "question: I lost my badge" in text
    assert "lost-badge.md" in text and "down by ann: outdated" in text
    assert "passage choice (score, each feature's share):" in text


def test_voted_questions_export_as_eval_cases_for_a_lead_to_label(config_file, tmp_path):
    ok(kbot(config_file, "sync", "--json"))

    def ask(question: str) -> str:
        return json.loads(ok(kbot(config_file, "ask", "--json", question)).stdout)["query_id"]

    badge, badge_again, coffee = (
        ask("I lost my badge"),
        ask("i lost  my badge"),
        ask("How do I descale the coffee machine?"),
    )
    ok(kbot(config_file, "feedback", "add", badge, "down", "--reason", "outdated"))
    ok(kbot(config_file, "feedback", "add", badge_again, "down", "--user", "bo"))
    ok(kbot(config_file, "feedback", "add", coffee, "up"))

    out = tmp_path / "cases.jsonl"
    ok(kbot(config_file, "feedback", "export", "--to-eval", str(out)))
    [case] = [json.loads(line) for line in out.read_text().splitlines()]
    assert case["question"] == "I lost my badge"
    assert (case["relevant"], case["answer_keywords"], case["kind"]) == ([], [], "lookup")
    assert case["cited"][0] == "handbook:lost-badge.md"
    assert [f["reason"] for f in case["feedback"]] == ["outdated", None]
    # Until a lead names the relevant documents, eval refuses the case and says why.
    err = failed(kbot(config_file, "eval", "--questions", str(out)))
    assert "needs at least one 'relevant' document" in err

    ok(kbot(config_file, "feedback", "export", "--to-eval", str(out), "--include-up"))
    questions = [json.loads(line)["question"] for line in out.read_text().splitlines()]
    assert questions == ["I lost my badge", "How do I descale the coffee machine?"]


def test_trace_of_an_unknown_answer_fails_cleanly(config_file):
    err = failed(kbot(config_file, "trace", "unknown-id"))
    assert err.strip() == "Error: no answer with query id 'unknown-id'"


def test_feedback_on_an_unknown_answer_fails_cleanly(config_file):
    err = failed(kbot(config_file, "feedback", "add", "unknown-id", "up"))
    assert err.strip() == "Error: no answer with query id 'unknown-id'"


def test_feedback_vote_must_be_up_or_down(config_file):
    result = kbot(config_file, "feedback", "add", "some-id", "sideways")
    assert result.exit_code == 2
    assert "'sideways' is not one of 'up', 'down'" in result.stderr


# -- connectors list ------------------------------------------------------------------------------


def test_connectors_list_before_and_after_a_sync(tmp_path, kb, embedder):
    config = write_config(tmp_path, broken_git=True)
    before = json.loads(ok(kbot(config, "connectors", "list", "--json")).stdout)["connectors"]
    assert [r["name"] for r in before] == ["handbook", "broken"]
    assert before[0]["last_run"] is None and before[0]["freshness"] == "never synced"
    assert "never synced" in ok(kbot(config, "connectors", "list")).stdout

    chunks = sync_json(config, code=1)["handbook"]["chunks"]
    rows = json.loads(ok(kbot(config, "connectors", "list", "--json")).stdout)["connectors"]
    handbook, broken = rows
    assert (handbook["type"], handbook["schedule"], handbook["audience"]) == (
        "filesystem",
        "15m",
        "public",
    )
    assert (handbook["documents"], handbook["chunks"]) == (3, chunks)
    last = handbook["last_run"]
    assert (last["status"], last["added"], last["error"]) == ("ok", 3, None)
    started = datetime.fromisoformat(last["started_at"])
    # An interval counts from the last successful run, not from "now".
    assert datetime.fromisoformat(handbook["next_run"]) - started == timedelta(minutes=15)
    assert re.fullmatch(r"\d+s old", handbook["freshness"])

    assert broken["last_run"]["status"] == "failed"
    assert "git clone" in broken["last_run"]["error"]
    assert broken["freshness"] == "never synced"
    assert broken["documents"] == 0

    text = ok(kbot(config, "connectors", "list")).stdout
    assert "handbook (filesystem, every 15m, audience public)" in text
    assert re.search(r"last run \S+: ok, \+3 ~0 -0 =0\n", text)
    assert f"3 documents, {chunks} chunks; next run " in text
    assert re.search(r"freshness \d+s old", text)
    assert "broken (git, every 0 * * * *" in text and "failed" in text


def test_kbot_config_env_var_selects_the_config(config_file, monkeypatch):
    monkeypatch.chdir(config_file.parent.parent)
    result = ok(kbot(None, "connectors", "list", env={"KBOT_CONFIG": str(config_file)}))
    assert result.stdout.startswith("handbook (filesystem")


# -- help and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "summary"),
    [
        ([], "answers questions from your runbooks"),
        (["sync"], "Sync connectors"),
        (["ask"], "Ask a QUESTION"),
        (["serve"], "Serve the web chat"),
        (["worker"], "Run scheduled syncs"),
        (["connectors"], "Inspect the configured connectors"),
        (["connectors", "list"], "last run, counts, next run and freshness"),
        (["feedback"], "Record and export feedback"),
        (["feedback", "add"], "Record a"),
    ],
)
def test_help(tmp_path, command, summary):
    # Help must not need a config: this one does not exist.
    result = ok(kbot(tmp_path / "missing.yaml", *command, "--help"))
    assert result.stdout.startswith(f"Usage: kbot {' '.join(command)}".rstrip())
    assert summary in result.stdout


def test_version():
    assert re.fullmatch(r"kbot, version \S+\n", ok(kbot(None, "--version")).stdout)


def test_missing_config_file(tmp_path):
    err = failed(kbot(tmp_path / "missing.yaml", "connectors", "list"))
    assert err.startswith(f"Error: {tmp_path / 'missing.yaml'}: config file not found")


def test_bad_config_in_a_real_process_is_one_line_without_traceback(tmp_path, kb):
    config = tmp_path / "kbot.yaml"
    config.write_text("connectors:\n  - name: docs\n    type: ftp\n    path: kb\n")
    exe = Path(sys.executable).parent / "kbot"
    proc = subprocess.run(
        [str(exe), "--config", str(config), "sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {config}: invalid configuration: ")
    assert "connector 'docs' (connectors[0]): field 'type': unknown type 'ftp'" in lines[0]
    assert lines[0].endswith("valid types: " + ", ".join(sorted(REGISTRY)))
