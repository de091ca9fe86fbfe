"""Shared fixtures: real services only. The embedding model loads once per session, and the
real corpus in ../shared/corpus is indexed once per session and shared (read-only)."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime
from config import KbotConfig, parse_config
from db import Database

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KBOT_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
DEV_QUESTIONS = SHARED / "eval" / "dev_questions.jsonl"
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("KBOT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def need(condition: bool, reason: str) -> None:
    """Skip when a service is missing on a developer's machine; under CI=true, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it)")
    pytest.skip(reason)


def make_config(
    tmp_path: Path, connectors: list[dict[str, Any]] | None = None, **sections: Any
) -> KbotConfig:
    """A validated config whose storage lives in ``tmp_path``."""
    data: dict[str, Any] = {"storage": {"data_dir": str(tmp_path / "data")}}
    data.update(sections)
    data["connectors"] = connectors or []
    return parse_config(data, source="test.yaml", base_dir=tmp_path)


@pytest.fixture(scope="session")
def embedder():
    from indexer.embeddings import get_embedder

    return get_embedder()


@pytest.fixture
def runtime_factory(embedder) -> Iterator:
    """Build Runtimes over test configs; closes them (and their writer locks) afterwards."""
    made: list[Runtime] = []

    def make(config: KbotConfig) -> Runtime:
        rt = Runtime(config)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def synced_runtime(
    make: Callable[[KbotConfig], Runtime], root: Path, files: dict[str, str]
) -> Runtime:
    """A runtime (from ``runtime_factory``) over a folder ``root/kb`` holding ``files``
    (path -> Markdown, dedented), synced once with one filesystem connector named "kb"."""
    kb = root / "kb"
    for rel, text in files.items():
        (kb / rel).parent.mkdir(parents=True, exist_ok=True)
        (kb / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    rt = make(make_config(root, [{"name": "kb", "type": "filesystem", "path": str(kb)}]))
    assert rt.indexer.sync()[0].ok
    return rt


@pytest.fixture(scope="session")
def corpus_runtime(tmp_path_factory, embedder) -> Iterator[Runtime]:
    """The real corpus, synced once for the whole session. Tests must not write to it."""
    need(CORPUS.is_dir(), f"the shared corpus is missing at {CORPUS}")
    tmp = tmp_path_factory.mktemp("corpus-index")
    config = make_config(
        tmp, [{"name": "corpus", "type": "filesystem", "path": str(CORPUS), "schedule": "1h"}]
    )
    rt = Runtime(config)
    results = rt.indexer.sync()
    assert results[0].ok, results[0].error
    yield rt
    rt.close()


def _pg_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def pg_schema(prefix: str = "kbot_test") -> Iterator[str]:
    """A fresh schema on the local PostgreSQL server, dropped afterwards; yields its URL."""
    need(_pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, pool_pre_ping=True)  # survives a restart in a test
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def migrated(url: str) -> str:
    """``url`` after ``kbot db upgrade``: kbot itself migrates only SQLite at start-up."""
    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the local server, dropped afterwards."""
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[Database]:
    """A migrated database, on SQLite and on the real PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kbot.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()


# Debian's chromium package; `playwright install` cannot download browsers here.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, driven by Playwright, shared by the tests of a module."""
    import importlib.util

    need(CHROMIUM.is_file(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    need(
        importlib.util.find_spec("playwright") is not None,
        "the playwright package is not installed (pip install -e '.[dev]')",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class ChromaServer:
    url: str
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path) -> Iterator[ChromaServer]:
    """A real `chroma run` server (installed with chromadb) on a free port, on its own
    folder, stopped afterwards."""
    import shutil
    import sys

    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    need(Path(exe).exists(), "the `chroma` command (chromadb's server) is not installed")
    port = _free_port()
    log = (tmp_path / "chroma.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            "run",
            "--path",
            str(tmp_path / "chroma-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    need(
                        False,
                        "`chroma run` did not start: "
                        + (tmp_path / "chroma.log").read_text()[-500:],
                    )
                time.sleep(0.1)
        yield ChromaServer(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


REDIS_URL = os.environ.get("KBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@contextmanager
def kbot_keys_cleared(url: str, connect_timeout_s: float = 1) -> Iterator[str]:
    """The Redis at ``url`` (which must answer), with kbot's keys cleared before and after:
    for the tests here and the benchmarks in bench/."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s)
    client.ping()

    def clear() -> None:
        for key in client.scan_iter("kbot:*"):
            client.delete(key)

    clear()
    try:
        yield url
    finally:
        clear()
        client.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The local Redis (database 15), with kbot's keys cleared before and after."""
    import redis

    with ExitStack() as stack:
        try:
            url = stack.enter_context(kbot_keys_cleared(REDIS_URL))
        except redis.RedisError as e:
            need(False, f"Redis is not running at {REDIS_URL} ({e})")
        yield url
