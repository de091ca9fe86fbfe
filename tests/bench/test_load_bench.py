"""bench/load.py runs end to end at a tiny scale: real processes, every row accounted for."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_the_load_bench_runs_at_tiny_scale(tmp_path: Path) -> None:
    need(_listening(5432), "PostgreSQL is not running on 127.0.0.1:5432")
    need(_listening(6379), "Redis is not running on 127.0.0.1:6379")
    chroma = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    need(Path(chroma).exists(), "the `chroma` command (chromadb's server) is not installed")
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--slack", "2", "--teams", "2"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    region = text.split("<!-- bench/load.py:start -->")[1].split("<!-- bench/load.py:end -->")[0]
    assert "| Slack | 2 |" in region and "| Teams | 2 |" in region
    assert "**4 of 4** questions" in region and "**4 of 4** votes" in region
    assert "Nothing was lost or doubled" in region
