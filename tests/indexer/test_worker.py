"""One scheduler: ``kbot worker`` keeps its schedule in the database, and a sync lock lets
one process at a time sync a connector (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from db import Database
from db.models import SchedulerJob, SyncRun
from indexer.scheduler import build_scheduler, run_sync
from indexer.sync_lock import HELD, SyncLock
from tests.conftest import REPO, make_config, migrated, pg_schema


def _kb(tmp_path: Path) -> Path:
    src = tmp_path / "kb"
    src.mkdir(exist_ok=True)
    (src / "a.md").write_text("# Alpha\n\nThe alpha service restarts nightly at 02:00.\n")
    return src


def test_the_sync_lock_admits_one_holder_per_connector(database: Database, tmp_path) -> None:
    # Two SyncLocks on their own connections (or file descriptors) stand for two processes.
    first, second = SyncLock(database, tmp_path), SyncLock(database, tmp_path / "other")
    with first.hold("wiki") as held:
        assert held
        with second.hold("wiki") as again:
            assert not again
        with second.hold("runbooks") as other:
            assert other  # another connector is not blocked
    with second.hold("wiki") as after:
        assert after  # released when the holder is done


def test_the_sqlite_lock_sits_beside_the_database_not_in_a_data_dir(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'shared' / 'kbot.db'}")
    try:
        # Two data directories (two checkouts on one machine) sharing one database file.
        a, b = SyncLock(db, tmp_path / "a"), SyncLock(db, tmp_path / "b")
        with a.hold("kb") as held, b.hold("kb") as other:
            assert held and not other
        assert (tmp_path / "shared" / "kbot.db.locks").is_dir()
    finally:
        db.dispose()


def test_a_sync_that_finds_the_lock_held_is_skipped_and_says_so(
    tmp_path, runtime_factory, caplog
) -> None:
    cfg = make_config(tmp_path, [{"name": "kb", "type": "filesystem", "path": str(_kb(tmp_path))}])
    rt = runtime_factory(cfg)
    other = SyncLock(rt.db, tmp_path / "elsewhere")
    with other.hold("kb") as held, caplog.at_level(logging.WARNING, logger="indexer.sync"):
        assert held
        [result] = rt.indexer.sync(["kb"])
    assert result.skipped == HELD and result.ok and result.added == 0
    assert "sync of kb skipped: another worker holds the lock" in caplog.text
    with rt.db.session() as s:
        assert s.scalars(select(SyncRun)).all() == []  # nothing recorded as a run
    [result] = rt.indexer.sync(["kb"])
    assert result.skipped is None and result.added == 1


def test_the_worker_schedule_lives_in_the_database_and_drops_removed_jobs(
    tmp_path, runtime_factory
) -> None:
    src = _kb(tmp_path)
    with pg_schema() as url:
        url = migrated(url)
        two = make_config(
            tmp_path,
            [
                {"name": "a", "type": "filesystem", "path": str(src), "schedule": "1h"},
                {"name": "b", "type": "filesystem", "path": str(src), "schedule": "1d"},
            ],
            storage={"data_dir": str(tmp_path / "data"), "database_url": url},
        )
        rt = runtime_factory(two)
        sched = build_scheduler(two, rt.indexer, blocking=False, store=rt.db)
        sched.start(paused=True)  # adds the jobs to the store: they must pickle
        try:
            with rt.db.session() as s:
                assert set(s.scalars(select(SchedulerJob.id))) == {"sync:a", "sync:b"}
        finally:
            sched.shutdown(wait=False)

        # The next start with "b" removed from the config: its stored job goes too.
        one = two.model_copy(update={"connectors": two.connectors[:1]})
        sched = build_scheduler(one, rt.indexer, blocking=False, store=rt.db)
        sched.start(paused=True)
        try:
            [job] = sched.get_jobs()  # read back from the table
            assert job.id == "sync:a" and job.func is run_sync
            assert job.args == (str(one.storage.data_dir), "a")
            with rt.db.session() as s:
                assert set(s.scalars(select(SchedulerJob.id))) == {"sync:a"}
        finally:
            sched.shutdown(wait=False)


def test_a_second_kbot_worker_skips_the_sync_the_first_holds(tmp_path) -> None:
    """The real ``kbot worker`` process on PostgreSQL: while another holder has the
    connector's advisory lock, its start-up sync is skipped, logged, and not recorded."""
    src = _kb(tmp_path)
    with pg_schema() as url:
        url = migrated(url)
        config = tmp_path / "kbot.yaml"
        config.write_text(
            json.dumps(
                {
                    "storage": {"data_dir": str(tmp_path / "data"), "database_url": url},
                    "connectors": [
                        {"name": "kb", "type": "filesystem", "path": str(src), "schedule": "1h"}
                    ],
                }
            )
        )
        db = Database(url)
        lock = SyncLock(db, tmp_path / "first-worker")
        lines: list[str] = []
        try:
            with lock.hold("kb") as held:
                assert held
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bot.cli", "--config", str(config), "worker"],
                    stderr=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    text=True,
                    cwd=REPO,
                )

                def read() -> None:
                    for line in proc.stderr:
                        lines.append(line)

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and proc.poll() is None:
                    if any("skipped: another worker holds the lock" in x for x in lines):
                        break
                    time.sleep(0.2)
                proc.terminate()
                proc.wait(timeout=30)
            out = "".join(lines)
            assert "sync of kb skipped: another worker holds the lock" in out, out
            assert "worker started with 1 connector job(s); schedule kept in" in out, out
            with db.session() as s:
                assert s.scalars(select(SyncRun)).all() == []
                assert set(s.scalars(select(SchedulerJob.id))) == {"sync:kb"}
        finally:
            db.dispose()
