"""The ``git`` connector: clone or pull a repository and read its files like the filesystem one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, ValidationInfo, field_validator

from connectors.base import (
    ConnectorConfig,
    ConnectorError,
    Document,
    DocumentError,
    resolve_path,
    state_dir,
)
from connectors.filesystem import check_template, matches, read_or_report
from connectors.parsing import DEFAULT_INCLUDE, file_format, file_type

GIT_TIMEOUT_S = 300
_USERINFO = re.compile(r"(://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the user and password or token of any ``scheme://user:pass@`` URL hidden."""
    return _USERINFO.sub(r"\1***@", text)


class GitConfig(ConnectorConfig):
    type: Literal["git"]
    url: str = Field(description="a clone URL, or a path to a local repository")
    branch: str | None = Field(default=None, description="default: the remote's default branch")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    url_template: str | None = Field(
        default=None,
        description="e.g. https://github.com/acme/runbooks/blob/{commit}/{path}",
    )

    @field_validator("url")
    @classmethod
    def _local_paths_resolve(cls, v: str, info: ValidationInfo) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if v.startswith("-"):
            raise ValueError("must be a clone URL or a path, not start with '-'")
        looks_remote = "://" in v or (":" in v and "@" in v.split(":", 1)[0])
        if looks_remote:
            return v
        return str(resolve_path(Path(v), info))

    @field_validator("branch")
    @classmethod
    def _branch_is_a_name(cls, v: str | None) -> str | None:
        # git would read a leading '-' as an option.
        if v is not None and (not v.strip() or v.startswith("-")):
            raise ValueError("must be a branch name (not empty, not starting with '-')")
        return v

    @field_validator("url_template")
    @classmethod
    def _template_fields(cls, v: str | None) -> str | None:
        return check_template(v, {"path", "commit", "branch"})


class GitConnector:
    """Keeps a working copy under the data dir; one instance serves one sync run.

    The first capability called fetches the repository once; later calls in the same run
    read that checkout, so a sync sees one consistent commit.

    ``changed_since`` dates a file by the commit that brought its last change onto the
    branch, and also returns every file the fetch changed: commits pushed long after they
    were made carry old dates, yet must not be missed.
    """

    type_name: ClassVar[str] = "git"

    def __init__(self, config: GitConfig, workdir: Path | None = None):
        self.config = config
        self.checkout = state_dir(workdir, self.type_name) / config.name
        self.skipped: dict[str, int] = {}  # include matched, kbot cannot read (by type)
        self.problems: list[DocumentError] = []
        self._commit: str | None = None
        self._branch: str | None = None
        self._mtimes: dict[str, float] = {}
        # Files this run's fetch changed since the checkout's previous commit (none after a
        # fresh clone); None when that cannot be told, so everything counts as changed.
        self._fetched: set[str] | None = set()

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        # Nothing may wait for a person: no terminal or askpass prompts, no ssh host-key
        # questions, and no stdin to read a password from.
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        url = redact(self.config.url)
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as e:
            raise ConnectorError("the git command is not installed on this machine") from e
        except subprocess.TimeoutExpired as e:
            raise ConnectorError(f"git {args[0]} of {url} took over {GIT_TIMEOUT_S}s") from e
        if out.returncode != 0:
            lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
            detail = redact(lines[-1]) if lines else f"exit code {out.returncode}"
            raise ConnectorError(f"git {args[0]} of {url} failed: {detail}")
        return out.stdout

    def _ensure_checkout(self) -> None:
        if self._commit is not None:
            return
        c = self.config
        previous: str | None = None
        if (self.checkout / ".git").is_dir():
            previous = self._git("rev-parse", "HEAD", cwd=self.checkout).strip()
            self._git("remote", "set-url", "origin", c.url, cwd=self.checkout)
            branch = c.branch or self._remote_default_branch()
            self._git("fetch", "--quiet", "origin", branch, cwd=self.checkout)
            self._git(
                "checkout", "--quiet", "--force", "-B", branch, "FETCH_HEAD", cwd=self.checkout
            )
        else:
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            args = ["clone", "--quiet", "--single-branch"]
            if c.branch:
                args += ["--branch", c.branch]
            tmp = self.checkout.with_name(self.checkout.name + ".partial")
            # Leftovers of an interrupted clone; both paths belong to kbot's data dir.
            for leftover in (tmp, self.checkout):
                if leftover.exists():
                    shutil.rmtree(leftover)
            self._git(*args, "--", c.url, str(tmp))
            tmp.rename(self.checkout)
        self._branch = self._git("rev-parse", "--abbrev-ref", "HEAD", cwd=self.checkout).strip()
        self._commit = self._git("rev-parse", "HEAD", cwd=self.checkout).strip()
        self._mtimes = self._last_commit_times()
        if previous is not None:
            self._fetched = self._changed_between(previous, self._commit)

    def _remote_default_branch(self) -> str:
        out = self._git("ls-remote", "--symref", "origin", "HEAD", cwd=self.checkout)
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/"):
                return line.split("refs/heads/", 1)[1].split()[0]
        raise ConnectorError(
            f"cannot tell the default branch of {redact(self.config.url)}; set `branch`"
        )

    def _last_commit_times(self) -> dict[str, float]:
        """Each file's last change on the branch, from one pass over its first-parent log.

        Following first parents with merge diffs dates a file by when it reached the branch,
        not by when it was authored on a feature branch, so ``changed_since`` misses nothing.
        """
        # -z: names are given raw, as ls-files -z gives them; without it git quotes names
        # with non-ASCII characters ("caf\303\251.md") and they would never match.
        out = self._git(
            "log",
            "-z",
            "--first-parent",
            "--diff-merges=first-parent",
            "--format=%x01%ct",
            "--name-only",
            "--no-renames",
            "HEAD",
            cwd=self.checkout,
        )
        times: dict[str, float] = {}
        stamp = 0.0
        # Each commit is "\x01<time>\0" followed by "\n<name>\0<name>\0..." when it has files.
        for token in out.split("\0"):
            if token.startswith("\x01"):
                stamp = float(token[1:])
                continue
            name = token.removeprefix("\n")
            if name and name not in times:
                times[name] = stamp
        return times

    def _changed_between(self, old: str, new: str) -> set[str] | None:
        """Files that differ between two commits; None when ``old`` is no longer known."""
        if old == new:
            return set()
        try:
            out = self._git(
                "diff", "-z", "--name-only", "--no-renames", old, new, "--", cwd=self.checkout
            )
        except ConnectorError:
            return None  # e.g. history rewritten and the old commit pruned
        return {name for name in out.split("\0") if name}

    def _ids(self) -> list[str]:
        self._ensure_checkout()
        files = self._git("ls-files", "-z", cwd=self.checkout).split("\0")
        wanted = [f for f in files if f and matches(f, self.config.include, self.config.exclude)]
        unread = Counter(file_type(f) for f in wanted if not file_format(f))
        self.skipped = dict(sorted(unread.items()))
        return sorted(f for f in wanted if file_format(f))

    def _read(self, rel: str) -> Document | None:
        c = self.config
        if c.url_template:
            url = c.url_template.format(path=quote(rel), commit=self._commit, branch=self._branch)
        else:
            url = (self.checkout / rel).resolve().as_uri()
        return read_or_report(self.problems, c, self.checkout, rel, url, self._mtimes.get(rel, 0.0))

    def load_all(self) -> Iterator[Document]:
        self.problems = []
        for rel in self._ids():
            doc = self._read(rel)
            if doc is not None:
                yield doc

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.problems = []
        cutoff = since.timestamp()
        ids = self._ids()  # fetches first, which is what sets self._fetched
        fetched = self._fetched
        for rel in ids:
            if fetched is None or rel in fetched or self._mtimes.get(rel, 0.0) >= cutoff:
                doc = self._read(rel)
                if doc is not None:
                    yield doc

    def list_ids(self) -> set[str]:
        return set(self._ids())
