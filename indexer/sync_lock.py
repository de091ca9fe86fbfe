"""One sync of a connector at a time, across every process that shares the database.

A second ``kbot worker`` started by mistake (or a ``kbot sync`` run by hand while the worker
syncs) must not sync the same connector at the same moment: both would embed the same
documents and race on the same rows. On PostgreSQL the lock is a session advisory lock
(``pg_try_advisory_lock``) on a connection held for the sync, so it is released when the
process dies or its connection drops. On SQLite (one machine) it is a file lock beside the
database file, which every process using that database sees and the kernel releases with
the process.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db import Database

log = logging.getLogger(__name__)
HELD = "another worker holds the lock"


# Advisory locks are per database, so the key includes the schema: two kbot deployments
# in one database (a schema each) do not block each other's syncs.
_KEY = "hashtextextended('kbot:sync:' || current_schema() || ':' || :name, 0)"


class SyncLock:
    def __init__(self, db: Database, data_dir: Path):
        self.db = db
        file = db.engine.url.database if db.engine.dialect.name == "sqlite" else None
        # Beside the SQLite file that the processes share; an in-memory one has no file.
        self.dir = Path(f"{file}.locks") if file and file != ":memory:" else data_dir / "locks"

    @contextmanager
    def hold(self, connector: str) -> Iterator[bool]:
        """Yields True while this process holds the connector's lock, False (at once) when
        another process does."""
        if self.db.engine.dialect.name == "postgresql":
            with self._advisory(connector) as held:
                yield held
        else:
            with self._file(connector) as held:
                yield held

    @contextmanager
    def _advisory(self, connector: str) -> Iterator[bool]:
        conn = self.db.engine.connect()
        held = False
        try:
            took = conn.execute(text(f"SELECT pg_try_advisory_lock({_KEY})"), {"name": connector})
            held = bool(took.scalar())
            conn.commit()  # the lock is the session's; no transaction is kept open
            yield held
        finally:
            try:
                if held:
                    conn.execute(text(f"SELECT pg_advisory_unlock({_KEY})"), {"name": connector})
                    conn.commit()
            except DBAPIError:
                # A lost connection has released the lock with its session.
                log.debug("advisory unlock of %s failed", connector, exc_info=True)
            finally:
                conn.close()

    @contextmanager
    def _file(self, connector: str) -> Iterator[bool]:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(connector.encode()).hexdigest()[:16]
        fd = os.open(self.dir / f"sync-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
