"""The SQL database: engine, sessions, migrations. SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseError(Exception):
    """The database cannot be reached or migrated."""


class SchemaOutOfDate(DatabaseError):
    """The database's schema is older (or newer) than this kbot's migrations."""


@dataclass(frozen=True)
class Pool:
    """Connection pool settings (``storage.pool``); SQLite ignores all but ``retry_s``."""

    size: int = 5
    max_overflow: int = 10
    timeout_s: float = 30
    recycle_s: int = 1800
    retry_s: float = 15


class Database:
    """One engine per process; ``session()`` gives a transaction that commits or rolls back,
    ``write()`` one that is run again on a new connection when the old one was lost."""

    def __init__(self, url: str, pool: Pool | None = None):
        self.url = url
        self.pool = pool or Pool()
        sqlite = url.startswith("sqlite")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        sizing = (
            {}
            if sqlite
            else {
                "pool_size": self.pool.size,
                "max_overflow": self.pool.max_overflow,
                "pool_timeout": self.pool.timeout_s,
                "pool_recycle": self.pool.recycle_s,
            }
        )
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True, **sizing)
        except (SQLAlchemyError, ImportError, TypeError) as e:
            raise DatabaseError(f"cannot use database_url {redact_url(url)}: {e}") from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        return redact_url(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def write(self, work: Callable[[Session], T], what: str = "write") -> T:
        """Run ``work`` in a transaction; when the connection is lost or refused (a
        restart, a failover, a dropped socket), run it again on a new one, for up to
        ``pool.retry_s`` seconds. ``work`` must be safe to run twice: a commit whose
        acknowledgement was lost is retried too. Other errors are not retried."""
        deadline = time.monotonic() + self.pool.retry_s
        delay, attempt = 0.1, 1
        while True:
            try:
                with self.session() as s:
                    return work(s)
            except DBAPIError as e:  # an IntegrityError is not transient: raised at once
                if not _transient(e) or time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "database %s: %s failed (attempt %d): %s; retrying in %.1f s",
                    self.where,
                    what,
                    attempt,
                    _first_line(e),
                    delay,
                )
                self.engine.dispose()  # the pool's other connections died with this one
                time.sleep(delay)
                delay, attempt = min(delay * 2, 2.0), attempt + 1

    def revision(self) -> str | None:
        """The schema revision the database is at (None: never migrated)."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as e:
            raise DatabaseError(
                f"cannot reach the database at {self.where}: {_first_line(e)}"
            ) from e

    def check_schema(self) -> None:
        """Refuse a database that is not at this kbot's newest migration."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config(self.url))
        head = script.get_current_head()
        current = self.revision()
        if current == head:
            return
        if current is None:
            state = "has no kbot schema yet"
        elif current in {r.revision for r in script.walk_revisions()}:
            state = f"is at schema revision {current}, this kbot needs {head}"
        else:
            state = f"is at schema revision {current}, which this kbot does not know (newer?)"
        raise SchemaOutOfDate(
            f"the database at {self.where} {state}: run `kbot db upgrade` (once, from any "
            "one machine), then start kbot again"
        )

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from alembic import command

        try:
            with self.engine.begin() as conn:
                cfg = alembic_config(self.url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except SQLAlchemyError as e:
            raise DatabaseError(f"cannot migrate database {redact_url(self.url)}: {e}") from e

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _transient(e: DBAPIError) -> bool:
    """A lost or refused connection (worth a new one), not a wrong statement."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if e.connection_invalidated:
        return True
    if not isinstance(e, (OperationalError, InterfaceError)):
        return False
    if "sqlite" in type(e.orig).__module__:
        # SQLite's OperationalError is also "no such table"; only a busy file is transient.
        return "locked" in str(e.orig) or "busy" in str(e.orig)
    return True


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    # WAL lets the web server read while the scheduler writes; foreign keys for CASCADE.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def redact_url(url: str) -> str:
    """A service URL (a database's, Redis's) without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"
