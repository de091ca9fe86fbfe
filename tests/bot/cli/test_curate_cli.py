"""`kbot curate` and `kbot review` through the real CLI (click's CliRunner, so the session's
embedding model is reused) over a tiny knowledge folder, questions asked with `kbot ask`
and voted with `kbot feedback add`; on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bot.cli.test_cli import DOCS, failed, kbot, ok
from tests.conftest import migrated, pg_schema

BADGE_Q = "I lost my badge"
# Abstains over the three documents.
WIFI_Q = "What is the guest wifi password?"
# Answered from parking.md; the badge document only mentions the rack's badge reader.
BIKE_Q = "Where do bicycles go?"


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request, tmp_path: Path, embedder) -> Iterator[Path]:
    kb = tmp_path / "kb"
    kb.mkdir()
    for name, text in DOCS.items():
        (kb / name).write_text(text, encoding="utf-8")

    def write(url: str) -> Path:
        path = tmp_path / "kbot.yaml"
        path.write_text(
            f"storage:\n  data_dir: data\n  database_url: {json.dumps(url)}\n"
            "connectors:\n  - name: handbook\n    type: filesystem\n    path: kb\n",
            encoding="utf-8",
        )
        ok(kbot(path, "sync", "--json"))
        return path

    if request.param == "sqlite":
        yield write(f"sqlite:///{tmp_path / 'kbot.db'}")
    else:
        with pg_schema("kbot_curate") as url:
            yield write(migrated(url))


def ask(config: Path, question: str) -> dict[str, Any]:
    return json.loads(ok(kbot(config, "ask", "--json", question)).stdout)


def paths(answer: dict[str, Any]) -> list[str]:
    return [c["path"] for c in answer["citations"]]


def listed(config: Path, *args: str) -> list[dict[str, Any]]:
    return json.loads(ok(kbot(config, "curate", "list", "--json", *args)).stdout)


# -- kbot curate -----------------------------------------------------------------------------


def test_pin_list_trace_and_remove_and_the_answer_is_restored(config: Path) -> None:
    before = ask(config, BIKE_Q)
    assert paths(before)[0] == "parking.md"
    out = ok(
        kbot(
            config,
            "curate",
            "pin",
            "--question",
            BIKE_Q,
            "--connector",
            "handbook",
            "--path",
            "lost-badge.md",
            "--by",
            "lead",
        )
    ).stdout
    [c] = listed(config)
    assert out.startswith(f"pin #{c['id']}: handbook:lost-badge.md (Replacing a lost door badge)")
    assert (c["action"], c["question"], c["path"], c["created_by"], c["broken"]) == (
        "pin",
        BIKE_Q,
        "lost-badge.md",
        "lead",
        False,
    )
    # A paraphrase is answered from the pinned document first.
    pinned = ask(config, "where do bicycles go")
    assert paths(pinned)[0] == "lost-badge.md"
    text = ok(kbot(config, "trace", pinned["query_id"])).stdout
    assert "feedback and curations:" in text
    assert f"pin #{c['id']} of handbook:lost-badge.md applied (similarity" in text
    assert "feedback and curations: none" in ok(kbot(config, "trace", before["query_id"])).stdout

    removed = ok(kbot(config, "curate", "remove", str(c["id"]), "--by", "lead")).stdout
    assert removed.strip() == f"removed pin #{c['id']} (handbook:lost-badge.md)"
    assert listed(config) == []
    [gone] = listed(config, "--all")
    assert gone["removed_by"] == "lead" and gone["removed_at"]
    after = ask(config, BIKE_Q)
    assert paths(after) == paths(before) and after["answer"] == before["answer"]


def test_suppress_leaves_a_document_out_for_that_question(config: Path) -> None:
    args = ["--question", BADGE_Q, "--connector", "handbook", "--path", "lost-badge.md"]
    ok(kbot(config, "curate", "suppress", *args))
    assert "lost-badge.md" not in paths(ask(config, BADGE_Q))
    assert paths(ask(config, "How long does a replacement door badge take?"))[0] == (
        "lost-badge.md"
    )
    text = ok(kbot(config, "curate", "list")).stdout
    assert "suppress handbook:lost-badge.md (Replacing a lost door badge)" in text
    assert f"for “{BADGE_Q}” by " in text


def test_a_curation_of_a_deleted_document_is_listed_as_broken(config: Path) -> None:
    args = ["--question", BIKE_Q, "--connector", "handbook", "--path", "parking.md"]
    ok(kbot(config, "curate", "pin", *args))
    (config.parent / "kb" / "parking.md").unlink()
    ok(kbot(config, "sync", "--json"))
    [c] = listed(config)
    assert c["broken"] is True and c["title"] is None
    assert "[BROKEN] handbook:parking.md (no longer indexed)" in (
        ok(kbot(config, "curate", "list")).stdout
    )
    answer = ask(config, BIKE_Q)  # ignored in ranking: no error, nothing of it
    assert "parking.md" not in paths(answer)


def test_unknown_documents_and_ids_are_clear_errors(config: Path) -> None:
    base = ["curate", "pin", "--question", BADGE_Q, "--connector"]
    err = failed(kbot(config, *base, "handbook", "--path", "no-such.md"))
    assert "no indexed document 'no-such.md' in connector 'handbook'" in err
    err = failed(kbot(config, *base, "wiki", "--path", "lost-badge.md"))
    assert "in connector 'wiki'" in err
    assert failed(kbot(config, "curate", "remove", "999")).strip() == (
        "Error: no curation with id 999"
    )
    assert "Missing option '--path'" in failed(kbot(config, *base, "handbook"))
    for action in ("right", "gap", "dismiss"):
        err = failed(kbot(config, "review", action, "nope"))
        assert err.strip() == "Error: no answer with query id 'nope'"
    err = failed(kbot(config, "feedback", "add", "nope", "down"))
    assert err.strip() == "Error: no answer with query id 'nope'"


# -- kbot review -----------------------------------------------------------------------------


def test_review_list_pick_right_and_export_labeled_eval_cases(config: Path, tmp_path) -> None:
    wifi = ask(config, WIFI_Q)
    assert wifi["abstained"]
    badge = ask(config, BADGE_Q)
    ok(kbot(config, "feedback", "add", badge["query_id"], "down", "--reason", "wrong"))
    bike = ask(config, BIKE_Q)

    items = json.loads(ok(kbot(config, "review", "list", "--json")).stdout)
    by_id = {i["query_id"]: i for i in items}
    assert by_id[wifi["query_id"]]["why"] == "abstained"
    assert by_id[badge["query_id"]]["why"] == "downvoted"
    for i in items:
        assert {"query_id", "question", "why", "asked_at"} <= set(i)
        assert i["why"] in ("low_confidence", "abstained", "downvoted")
        assert i["asked_at"][:4].isdigit() and "T" in i["asked_at"]
    assert by_id[wifi["query_id"]]["question"] == WIFI_Q
    assert bike["query_id"] not in by_id or by_id[bike["query_id"]]["why"] == "low_confidence"

    out = ok(
        kbot(
            config,
            "review",
            "pick",
            wifi["query_id"],
            "--connector",
            "handbook",
            "--path",
            "lost-badge.md",
            "--by",
            "lead",
        )
    ).stdout
    assert out.startswith("pinned handbook:lost-badge.md (pin #")
    assert "1 answer(s) left the queue" in out
    ok(kbot(config, "review", "right", badge["query_id"], "--by", "lead"))
    err = failed(kbot(config, "review", "gap", badge["query_id"]))
    assert f"answer {badge['query_id']} was already reviewed: right by lead" in err
    left = {i["query_id"] for i in json.loads(ok(kbot(config, "review", "list", "--json")).stdout)}
    assert not {wifi["query_id"], badge["query_id"]} & left
    [pin] = listed(config)
    assert (pin["question"], pin["query_id"]) == (WIFI_Q, wifi["query_id"])

    cases_file = tmp_path / "cases.jsonl"
    said = ok(kbot(config, "feedback", "export", "--to-eval", str(cases_file))).stdout
    assert said.strip() == f"wrote 2 question(s) to {cases_file}, 2 labeled by review"
    cases = {c["question"]: c for c in map(json.loads, cases_file.read_text().splitlines())}
    assert cases[WIFI_Q]["relevant"] == ["lost-badge.md"]
    assert cases[WIFI_Q]["review"]["outcome"] == "pinned"
    assert cases[BADGE_Q]["relevant"] == paths(badge)
    # No hand editing: `kbot eval` takes the file as it is.
    report = tmp_path / "eval.jsonl"
    result = ok(kbot(config, "eval", "--questions", str(cases_file), "--report", str(report)))
    assert "hit@5" in result.stdout
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert {r["id"] for r in rows} == {c["id"] for c in cases.values()}


def test_review_list_text_says_when_nothing_waits(config: Path) -> None:
    assert ok(kbot(config, "review", "list")).stdout.strip() == "nothing waits for review"
    assert ok(kbot(config, "curate", "list")).stdout.strip() == "no curations"
