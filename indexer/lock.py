"""One writer per embedded index: Chroma's PersistentClient is unsafe for two writing processes."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class IndexLockedError(Exception):
    """Another process already writes this index."""


class WriterLock:
    """An advisory lock file next to the store, held for the life of the writing process."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "index.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IndexLockedError(
                f"another kbot process (pid {holder}) is writing the index in {self.path.parent}; "
                "only one process may write an embedded index. Stop it, or let it do the sync "
                "(`kbot serve` syncs on schedule)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
