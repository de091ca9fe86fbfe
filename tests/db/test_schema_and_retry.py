"""The schema check at start-up, `kbot db upgrade`, pool settings, and writes that survive a
lost connection: on SQLite and on the real PostgreSQL server (restarted in one test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import func, select, text

from bot.cli import cli
from bot.runtime import Runtime
from config import ConfigError
from db import Database, Pool, SchemaOutOfDate, alembic_config
from db.models import Feedback, QueryRecord
from tests.conftest import make_config, migrated, need


def _url(request, tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'kbot.db'}"
    return request.getfixturevalue("pg_url")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_check_schema_names_the_revision_and_the_command(request, tmp_path, backend):
    url = _url(request, tmp_path, backend)
    db = Database(url)
    try:
        with pytest.raises(SchemaOutOfDate, match=r"has no kbot schema yet: run `kbot db upgrade`"):
            db.check_schema()
        command.upgrade(alembic_config(url), "0005")
        with pytest.raises(SchemaOutOfDate, match=r"at schema revision 0005, this kbot needs 0010"):
            db.check_schema()
        db.migrate()
        db.check_schema()
        assert db.revision() == "0010"
    finally:
        db.dispose()


def test_a_database_from_a_newer_kbot_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'kbot.db'}"
    db = Database(url)
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaOutOfDate, match="0099, which this kbot does not know"):
        db.check_schema()
    db.dispose()


def test_runtime_on_postgresql_refuses_an_old_schema_and_sqlite_migrates_itself(request, tmp_path):
    pg = request.getfixturevalue("pg_url")
    rt = Runtime(
        make_config(tmp_path, storage={"data_dir": str(tmp_path / "a"), "database_url": pg})
    )
    with pytest.raises(SchemaOutOfDate, match="kbot db upgrade"):
        _ = rt.db
    lite = Runtime(make_config(tmp_path, storage={"data_dir": str(tmp_path / "b")}))
    assert lite.db.revision() == "0010"
    lite.close()
    # An operator may opt in or out explicitly.
    opted = Runtime(
        make_config(
            tmp_path,
            storage={"data_dir": str(tmp_path / "c"), "database_url": pg, "auto_migrate": True},
        )
    )
    assert opted.db.revision() == "0010"
    opted.close()


def test_kbot_db_upgrade_then_status(request, tmp_path):
    pg = request.getfixturevalue("pg_url")
    cfg = tmp_path / "kbot.yaml"
    cfg.write_text(f"storage:\n  data_dir: {tmp_path / 'data'}\n  database_url: '{pg}'\n")
    runner = CliRunner()
    status = runner.invoke(cli, ["--config", str(cfg), "db", "status"])
    assert status.exit_code == 1
    assert "no kbot schema yet: run `kbot db upgrade`" in status.output
    first = runner.invoke(cli, ["--config", str(cfg), "db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "upgraded from empty to 0010" in first.output
    again = runner.invoke(cli, ["--config", str(cfg), "db", "upgrade"])
    assert "already at schema revision 0010" in again.output
    assert runner.invoke(cli, ["--config", str(cfg), "db", "status"]).exit_code == 0


def test_kbot_serve_names_an_unreachable_database_and_exits(tmp_path):
    cfg = tmp_path / "kbot.yaml"
    cfg.write_text(
        f"storage:\n  data_dir: {tmp_path / 'data'}\n"
        "  database_url: postgresql+psycopg://kbot@127.0.0.1:1/kbot\n"
    )
    kbot = shutil.which("kbot") or str(Path(os.sys.executable).with_name("kbot"))
    done = subprocess.run(
        [kbot, "--config", str(cfg), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and "Traceback" not in done.stderr
    assert "cannot reach the database at postgresql+psycopg://kbot@127.0.0.1:1/kbot" in lines[0]


def test_pool_settings_reach_the_engine(pg_url):
    db = Database(pg_url, Pool(size=3, max_overflow=1, timeout_s=2, recycle_s=60))
    try:
        assert db.engine.pool.size() == 3
        assert db.engine.pool._max_overflow == 1
        assert db.engine.pool._timeout == 2
        assert db.engine.pool._recycle == 60
    finally:
        db.dispose()


@pytest.mark.parametrize("bad", [{"size": 0}, {"retry_s": -1}, {"timeout_s": 0}, {"sise": 3}])
def test_bad_pool_settings_are_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="storage.pool"):
        make_config(tmp_path, storage={"data_dir": str(tmp_path), "pool": bad})


def test_a_write_whose_connection_dies_is_run_again(pg_url):
    db = Database(migrated(pg_url), Pool(retry_s=5))
    calls: list[int] = []

    def work(s):
        calls.append(1)
        if len(calls) == 1:  # the server drops this connection mid-transaction
            s.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        s.add(Feedback(query_id="q", user_id="u", vote="up"))

    try:
        with db.engine.begin() as conn:  # the vote's answer (a foreign key)
            conn.execute(
                text(
                    "INSERT INTO queries (id, created_at, platform, question, answer, abstained,"
                    " citations, retrieved, latency_ms) VALUES ('q', now(), 'cli', 'q', 'a',"
                    " false, '[]', '[]', '{}')"
                )
            )
        db.write(work, "record a vote")
        assert len(calls) == 2
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(Feedback)) == 1
    finally:
        db.dispose()


def test_a_wrong_statement_is_not_retried(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'kbot.db'}", Pool(retry_s=5))
    db.migrate()
    calls: list[int] = []

    def work(s):
        calls.append(1)
        s.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception, match="no_such_table"):
        db.write(work)
    assert calls == [1]
    db.dispose()


def _pg_ctl() -> list[str] | None:
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not clusters.is_dir() or os.geteuid() != 0:
        return None
    version = sorted(p.name for p in clusters.iterdir())[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]


@pytest.mark.postgres
def test_no_question_or_vote_is_lost_while_postgresql_restarts(request, tmp_path, runtime_factory):
    """Questions are asked and voted on from two threads while the real server restarts."""
    restart = _pg_ctl()
    need(restart is not None, "restarting PostgreSQL needs pg_ctlcluster and root")
    pg = migrated(request.getfixturevalue("pg_url"))
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "vpn.md").write_text(
        "# VPN\n\nTo reset the VPN token, open the portal and press Reset.\n"
    )
    rt = runtime_factory(
        make_config(
            tmp_path,
            [{"name": "kb", "type": "filesystem", "path": str(kb)}],
            storage={"data_dir": str(tmp_path / "data"), "database_url": pg},
        )
    )
    assert rt.indexer.sync()[0].ok
    asked: list[str] = []
    voted: list[str] = []
    errors: list[BaseException] = []
    started = threading.Event()
    spans: list[tuple[float, float]] = []  # (start, end) of each question and its vote

    def load(n: int) -> None:
        try:
            for i in range(40):
                t0 = time.monotonic()
                answer = rt.answering.ask(f"how do I reset the VPN token ({n}-{i})?")
                asked.append(answer.query_id)
                rt.feedback.record(answer.query_id, "up", user=f"u{n}")
                voted.append(answer.query_id)
                spans.append((t0, time.monotonic()))
                started.set()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    assert started.wait(60), errors
    down = time.monotonic()
    subprocess.run(restart, check=True, capture_output=True, timeout=120)
    up = time.monotonic()
    for t in threads:
        t.join(180)
    # The figures of docs/RELIABILITY.md (shown with -s).
    print(
        f"FIGURES postgresql: restart_s={up - down:.2f}, "
        f"asked_during_restart={sum(down < b and a < up for a, b in spans)}, "
        f"slowest_ask_and_vote_s={max(b - a for a, b in spans):.2f}"
    )
    assert not errors, errors
    assert len(asked) == len(voted) == 80
    with rt.db.session() as s:
        assert s.scalar(select(func.count()).select_from(QueryRecord)) == 80
        assert s.scalar(select(func.count()).select_from(Feedback)) == 80
        assert set(s.scalars(select(QueryRecord.id))) == set(asked)
