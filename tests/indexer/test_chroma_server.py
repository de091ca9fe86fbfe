"""kbot on a `chroma run` server (storage.chroma_url): a worker syncs into it, and a web
process on another data folder, sharing only the database and the server, retrieves
exactly as the embedded default does, keyword side included, and follows later syncs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from config import ConfigError
from indexer.lexical import LexicalIndex, SharedLexicalIndex
from indexer.store import StoreError
from tests.conftest import make_config

KNOWLEDGE = Path(__file__).resolve().parents[2] / "knowledge"
QUESTIONS = [
    "How do I rotate the payments API key?",
    "replica lag on postgres",
    "What do I do when a Kubernetes node's disk is full?",
    "redis maxmemory eviction",
    "checkout 5xx spike",
]


def _copy_knowledge(tmp_path: Path) -> Path:
    kb = tmp_path / "kb"
    shutil.copytree(KNOWLEDGE, kb, ignore=shutil.ignore_patterns("README.md"))
    return kb


def _config(tmp_path: Path, name: str, kb: Path, db: str, url: str | None):
    storage = {"data_dir": str(tmp_path / name), "database_url": db}
    if url is not None:
        storage["chroma_url"] = url
    return make_config(
        tmp_path / name,
        [{"name": "kb", "type": "filesystem", "path": str(kb)}],
        storage=storage,
    )


def _ranked(rt, question: str) -> list[tuple[str, float, float]]:
    return [
        (h.chunk.id, round(h.dense, 5), round(h.lexical, 5))
        for h in rt.answering.retrieve(question)
    ]


def test_web_process_on_a_server_retrieves_as_the_embedded_default(
    tmp_path, chroma_server, runtime_factory
):
    kb = _copy_knowledge(tmp_path)
    shared_db = f"sqlite:///{tmp_path / 'shared.db'}"
    embedded = runtime_factory(
        _config(tmp_path, "embedded", kb, f"sqlite:///{tmp_path / 'e.db'}", None)
    )
    assert embedded.indexer.sync()[0].ok
    worker = runtime_factory(_config(tmp_path, "worker", kb, shared_db, chroma_server.url))
    result = worker.indexer.sync()[0]
    assert result.ok and result.added > 0
    # Nothing of the index is on the worker's disk: the vectors are on the server.
    assert not (tmp_path / "worker" / "chroma").exists()
    assert not (tmp_path / "worker" / "bm25").exists()

    web = runtime_factory(_config(tmp_path, "web", kb, shared_db, chroma_server.url))
    assert isinstance(web.lexical, SharedLexicalIndex)
    assert isinstance(embedded.lexical, LexicalIndex)
    for q in QUESTIONS:
        got = _ranked(web, q)
        assert got, q
        assert any(lex > 0 for _, _, lex in got), f"no keyword hits for {q!r}"
        assert got == _ranked(embedded, q), q
    assert web.answering.ask(QUESTIONS[0]).text == embedded.answering.ask(QUESTIONS[0]).text
    assert not (tmp_path / "web" / "chroma").exists()
    assert not (tmp_path / "web" / "bm25").exists()


def test_the_keyword_index_follows_a_sync_within_seconds(tmp_path, chroma_server, runtime_factory):
    kb = _copy_knowledge(tmp_path)
    shared_db = f"sqlite:///{tmp_path / 'shared.db'}"
    # The web process starts before the first sync: no collection on the server yet.
    web = runtime_factory(_config(tmp_path, "web", kb, shared_db, chroma_server.url))
    web.db  # noqa: B018 - migrates the shared database
    assert web.answering.retrieve("zanzibarite quota") == []
    web.lexical.check_s = 0.2

    worker = runtime_factory(_config(tmp_path, "worker", kb, shared_db, chroma_server.url))
    assert worker.indexer.sync()[0].ok
    (kb / "runbooks" / "zanzibarite.md").write_text(
        "# Zanzibarite quota\n\nWhen the zanzibarite quota is exhausted, file a ticket "
        "with the storage team and raise the quota in the console.\n",
        encoding="utf-8",
    )
    assert worker.indexer.sync()[0].added == 1

    deadline = time.monotonic() + 10
    found: list[str] = []
    while time.monotonic() < deadline and not found:
        found = [cid for cid, _ in web.lexical.search("zanzibarite", 5)]
        time.sleep(0.1)
    assert found, "the web process's keyword index did not follow the sync"
    top = web.answering.retrieve("zanzibarite quota")[0]
    assert top.chunk.title == "Zanzibarite quota"
    assert top.lexical > 0

    (kb / "runbooks" / "zanzibarite.md").unlink()
    assert worker.indexer.sync()[0].deleted == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and web.lexical.search("zanzibarite", 5):
        time.sleep(0.1)
    assert web.lexical.search("zanzibarite", 5) == []


def test_an_unreachable_server_is_a_clear_error(tmp_path, runtime_factory):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    kb = _copy_knowledge(tmp_path)
    rt = runtime_factory(
        _config(tmp_path, "w", kb, f"sqlite:///{tmp_path / 'x.db'}", f"http://127.0.0.1:{port}")
    )
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        rt.indexer  # noqa: B018
    # Retrieval degrades to nothing found, with the reason logged, rather than crashing.
    with pytest.raises(StoreError):
        rt.store  # noqa: B018


@pytest.mark.parametrize(
    "url, error",
    [
        ("127.0.0.1:8000", r"must be an http\(s\) URL"),
        ("ftp://chroma:8000", r"must be an http\(s\) URL"),
        ("http://chroma:port", "bad port"),
    ],
)
def test_a_bad_chroma_url_is_a_config_error(tmp_path, url, error):
    with pytest.raises(ConfigError, match=error):
        make_config(tmp_path, storage={"data_dir": str(tmp_path), "chroma_url": url})


def test_a_token_is_sent_as_a_bearer_header(tmp_path):
    # A server that answers every request 401 (Chroma's answer to a wrong token) shows
    # what the client sent.
    import http.server
    import threading

    from indexer.store import VectorStore

    seen: list[str | None] = []

    class Deny(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            body = b'{"error":"AuthError","message":"Unauthorized"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        with pytest.raises(StoreError, match="cannot open the Chroma store at " + url):
            VectorStore(tmp_path, "m", create=False, url=url, token="s3cret")
    finally:
        srv.shutdown()
    assert "Bearer s3cret" in seen


def test_a_server_index_of_another_model_is_refused_until_reindex_is_asked_for(
    tmp_path, chroma_server
) -> None:
    from indexer.store import VectorStore

    first = VectorStore(tmp_path / "a", "model-one", create=True, url=chroma_server.url)
    assert first.recreated
    # A worker configured with another model must not empty what every web process reads.
    with pytest.raises(StoreError) as info:
        VectorStore(tmp_path / "b", "model-two", create=True, url=chroma_server.url)
    message = str(info.value)
    assert "built with embedding model 'model-one'" in message and "'model-two'" in message
    assert "`kbot sync --reindex`" in message
    # A reader is refused the same way; with --reindex the writer starts a clean collection.
    with pytest.raises(StoreError, match="kbot sync --reindex"):
        VectorStore(tmp_path / "c", "model-two", create=False, url=chroma_server.url)
    again = VectorStore(
        tmp_path / "d", "model-two", create=True, url=chroma_server.url, reindex=True
    )
    assert again.recreated and again.count() == 0
