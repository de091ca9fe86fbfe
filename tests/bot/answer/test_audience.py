"""The audience rule: a connector's documents are only retrieved, quoted or cited for
requests whose audiences include the connector's; ``public`` is visible everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.answer.retrieval import OVERFETCH
from bot.answer.types import Requester
from bot.runtime import Runtime
from tests.conftest import make_config

PUBLIC_DOC = (
    "# Deploying the web shop\n\nDeploy the web shop with `shipctl deploy shop` and your "
    "deploy token. The deploy takes five minutes and is announced in the release channel.\n"
)
SECRET_DOC = (
    "# Rotating the vault root token\n\nThe vault root token is rotated with "
    "`vaultctl rotate-root --quorum 3`. Three key holders must be present.\n"
)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def build(tmp_path: Path, runtime_factory, secret_audience: str, **extra) -> Runtime:
    pub = write(tmp_path / "pub", {"shop.md": PUBLIC_DOC})
    sec = write(tmp_path / "sec", {"vault.md": SECRET_DOC, **extra})
    cfg = make_config(
        tmp_path,
        [
            {"name": "wiki", "type": "filesystem", "path": str(pub), "schedule": "1h"},
            {
                "name": "security",
                "type": "filesystem",
                "path": str(sec),
                "schedule": "1h",
                "audience": secret_audience,
            },
        ],
    )
    rt = runtime_factory(cfg)
    assert all(r.ok for r in rt.indexer.sync())
    return rt


QUESTION = "How do I rotate the vault root token?"


def seen(answer) -> set[str]:
    """Every connector the answer drew on: citations, quoted context, retrieved list."""
    return (
        {c.connector for c in answer.citations}
        | {c.connector for c in answer.context}
        | {r["connector"] for r in answer.retrieved}
    )


def test_restricted_documents_never_reach_other_audiences(tmp_path, runtime_factory):
    rt = build(tmp_path, runtime_factory, "sre")
    outsider = rt.answering.ask(QUESTION, Requester("slack", "C-general", "U1"))
    assert "security" not in seen(outsider)
    assert "vaultctl" not in outsider.text and "quorum" not in outsider.text

    member = rt.answering.ask(QUESTION, Requester("slack", "C-sre", "U1", frozenset({"sre"})))
    assert not member.abstained
    assert member.citations[0].connector == "security"
    assert "vaultctl rotate-root" in member.text


def test_public_documents_are_visible_to_every_audience(tmp_path, runtime_factory):
    rt = build(tmp_path, runtime_factory, "sre")
    q = "How do I deploy the web shop?"
    for audiences in (frozenset(), frozenset({"sre"}), frozenset({"finance"})):
        a = rt.answering.ask(q, Requester("slack", "C1", "U1", audiences))
        assert a.citations and a.citations[0].connector == "wiki", audiences


def test_narrowing_an_audience_in_config_applies_before_the_next_sync(tmp_path, runtime_factory):
    build(tmp_path, runtime_factory, "public").close()
    # Same index, but the config now restricts the connector; nothing was re-synced.
    rt = build_without_sync(tmp_path, runtime_factory, "sre")
    a = rt.answering.ask(QUESTION, Requester("slack", "C-general", "U1"))
    assert "security" not in seen(a)


def build_without_sync(tmp_path: Path, runtime_factory, secret_audience: str) -> Runtime:
    cfg = make_config(
        tmp_path,
        [
            {"name": "wiki", "type": "filesystem", "path": str(tmp_path / "pub"), "schedule": "1h"},
            {
                "name": "security",
                "type": "filesystem",
                "path": str(tmp_path / "sec"),
                "schedule": "1h",
                "audience": secret_audience,
            },
        ],
    )
    return runtime_factory(cfg)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_visible_chunks_are_found_when_hidden_ones_crowd_the_top(tmp_path, runtime_factory, mode):
    # Many restricted documents are closer to the question than the one public document,
    # more than the over-fetch brings back: the filtered fallback must still find it.
    crowd = {
        f"vault-{i}.md": f"# Vault root token note {i}\n\nRotate the vault root token "
        f"(procedure variant {i}) with the quorum of key holders.\n"
        for i in range(OVERFETCH * 45)
    }
    rt = build(tmp_path, runtime_factory, "sre", **crowd)
    rt.config.retrieval.mode = mode
    # The second search knows the requester sees little of the index and filters at once.
    for _ in range(2):
        hits = rt.answering.retriever.search(QUESTION, 5, frozenset())
        assert hits, mode
        assert {h.chunk.connector for h in hits} == {"wiki"}


def test_a_name_only_restricted_documents_mention_looks_unknown_outside(tmp_path, runtime_factory):
    rt = build(tmp_path, runtime_factory, "sre")
    q = "What does rotate-root need?"
    outsider = rt.answering.ask(q, Requester("slack", "C-general", "U1"))
    assert outsider.abstained and "`rotate-root`" in outsider.text
    member = rt.answering.ask(q, Requester("slack", "C-sre", "U1", frozenset({"sre"})))
    assert "`rotate-root`" not in member.text
    assert member.citations[0].connector == "security"


def test_a_word_only_restricted_documents_use_looks_unknown_outside(tmp_path, runtime_factory):
    # The outsider is told what they would be told of a word no document uses at all, so
    # the reply says nothing of what the restricted documents hold.
    rt = build(tmp_path, runtime_factory, "sre")
    outsider = Requester("slack", "C-general", "U1")
    told = rt.answering.ask("how many key holders does vaultctl need?", outsider)
    assert told.abstained and "`vaultctl`" in told.text
    nowhere = rt.answering.ask("how many key holders does zorbulator need?", outsider)
    assert nowhere.text == told.text.replace("vaultctl", "zorbulator")
    member = Requester("slack", "C-sre", "U1", frozenset({"sre"}))
    answer = rt.answering.ask("how many key holders does vaultctl need?", member)
    assert "`vaultctl`" not in answer.text
    assert answer.citations[0].connector == "security"
