"""Hybrid retrieval over a small real index: vectors, BM25 keywords, and their fusion."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.answer.retrieval import Retriever
from indexer.lexical import LexicalIndex
from indexer.text import search_terms
from tests.conftest import make_config

DOCS = {
    "alerts/ZetaQueueStalled.md": "# Queue stalled\n\n## Meaning\n\nThe zeta queue stopped "
    "draining. Consumers are connected but acknowledge nothing.\n\n## Mitigation\n\n"
    "Restart the consumers with `zetactl restart --all`.\n",
    "alerts/DiskPressure.md": "# Disk pressure on nodes\n\nThe kubelet evicts pods when the "
    "node disk is nearly full. Clean up images with `crictl rmi --prune`.\n",
    "wiki/vacation.md": "# Holidays\n\nEmployees book time off in the HR portal at least two "
    "weeks ahead.\n",
    "wiki/certs.md": "# Certificate renewal\n\nTLS certificates are renewed by cert-manager "
    "thirty days before expiry.\n",
}


@pytest.fixture
def rt(tmp_path: Path, runtime_factory):
    src = tmp_path / "kb"
    for rel, text in DOCS.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    cfg = make_config(
        tmp_path, [{"name": "kb", "type": "filesystem", "path": str(src), "schedule": "1h"}]
    )
    runtime = runtime_factory(cfg)
    [res] = runtime.indexer.sync()
    assert res.ok
    return runtime


def retriever(rt, **overrides) -> Retriever:
    cfg = rt.config.retrieval.model_copy(update=overrides)
    return Retriever(cfg, lambda: rt.store, rt.lexical, rt.embedder)


def test_identifier_only_in_the_file_name_is_found_by_keywords(rt):
    # "ZetaQueueStalled" appears only in the file name, never in the text.
    lexical = retriever(rt, mode="lexical").search("ZetaQueueStalled fired", 2)
    assert lexical[0].chunk.doc_id == "alerts/ZetaQueueStalled.md"
    hybrid = retriever(rt).search("ZetaQueueStalled fired", 2)
    assert hybrid[0].chunk.doc_id == "alerts/ZetaQueueStalled.md"


def test_every_candidate_gets_both_scores(rt):
    hits = retriever(rt, candidates=4).search("how do I prune images when the disk is full", 4)
    assert hits[0].chunk.doc_id == "alerts/DiskPressure.md"
    assert all(-1.0 <= h.dense <= 1.0 for h in hits)
    assert hits[0].lexical > 0 and hits[0].dense > 0.3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_fusion_methods_rank_the_obvious_document_first(rt, fusion):
    hits = retriever(rt, fusion=fusion).search("when are TLS certificates renewed", 3)
    assert hits[0].chunk.doc_id == "wiki/certs.md"


def test_keyword_index_follows_deletions(rt, tmp_path):
    (tmp_path / "kb" / "wiki" / "vacation.md").unlink()
    [res] = rt.indexer.sync()
    assert res.deleted == 1
    hits = retriever(rt, mode="lexical").search("HR portal time off", 4)
    assert all(h.chunk.doc_id != "wiki/vacation.md" for h in hits)


def test_damaged_keyword_index_falls_back_to_vectors(rt):
    folder = rt.config.storage.data_dir / "bm25"
    version = (folder / "CURRENT").read_text().strip()
    (folder / version / "ids.json").write_text("{not json")
    broken = Retriever(rt.config.retrieval, lambda: rt.store, LexicalIndex(folder), rt.embedder)
    hits = broken.search("restart the zeta consumers", 2)
    assert hits and hits[0].chunk.doc_id == "alerts/ZetaQueueStalled.md"


def test_compound_identifiers_are_also_split():
    toks = search_terms("KubePodCrashLooping on etcd_mvcc_db_total_size")
    assert {"kubepodcrashloop", "pod", "crash", "etcd", "db", "size"} <= set(toks)


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_a_document_the_question_names_comes_first(rt, mode):
    # The question's other words are the zeta queue runbook's, but it names the alert.
    q = "DiskPressure fired while the zeta queue stopped draining: consumers acknowledge nothing"
    hits = retriever(rt, mode=mode).search(q, 3)
    assert hits[0].chunk.doc_id == "alerts/DiskPressure.md"
    assert hits[1].chunk.doc_id == "alerts/ZetaQueueStalled.md"
    # Unnamed, the same words find the zeta runbook first.
    unnamed = retriever(rt, mode=mode).search(q.replace("DiskPressure", "an alert"), 3)
    assert unnamed[0].chunk.doc_id == "alerts/ZetaQueueStalled.md"


TITLED = {
    "query-log.md": "# Query log\n\nSet `query_log_file` in the global section of the "
    "configuration and reload the server.\n",
    "histograms.md": "# Native histograms\n\nThe server logs every query that reads a "
    "histogram with too many buckets: each such query is logged with its duration.\n",
    "holidays.md": "# Holidays\n\nBook time off in the HR portal two weeks ahead.\n",
}


def test_a_document_titled_in_the_questions_words_ranks_higher(tmp_path, runtime_factory):
    src = tmp_path / "kb"
    src.mkdir()
    for rel, text in TITLED.items():
        (src / rel).write_text(text)
    cfg = make_config(tmp_path, [{"name": "kb", "type": "filesystem", "path": str(src)}])
    runtime = runtime_factory(cfg)
    assert all(r.ok for r in runtime.indexer.sync())
    # The histogram page holds more of the question's words; the query log page is what
    # it asks for, by its title.
    q = "how do I get every slow query logged with its duration, in the query log?"
    untitled = retriever(runtime, title_weight=0.0).search(q, 3)
    assert untitled[0].chunk.doc_id == "histograms.md"
    titled = retriever(runtime, title_weight=1.0).search(q, 3)
    assert titled[0].chunk.doc_id == "query-log.md"
    # Its title is in the question whole: 1.0 added, and the sum halved to stay within 1.
    assert titled[0].score == pytest.approx((untitled[1].score + 1.0) / 2)
