"""The ``git`` connector: clone or pull a repository and read its files like the filesystem one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, ValidationInfo, field_validator

from connectors.base import ConnectorConfig, ConnectorError, Document, DocumentError, resolve_path
from connectors.filesystem import check_template, matches, read_document
from connectors.parsing import DEFAULT_INCLUDE, file_format

GIT_TIMEOUT_S = 300


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
        looks_remote = "://" in v or (":" in v and "@" in v.split(":", 1)[0])
        if looks_remote:
            return v
        return str(resolve_path(Path(v), info))

    @field_validator("url_template")
    @classmethod
    def _template_fields(cls, v: str | None) -> str | None:
        return check_template(v, {"path", "commit", "branch"})


class GitConnector:
    """Keeps a working copy under the data dir; one instance serves one sync run.

    The first capability called fetches the repository once; later calls in the same run
    read that checkout, so a sync sees one consistent commit.
    """

    type_name: ClassVar[str] = "git"

    def __init__(self, config: GitConfig, workdir: Path | None = None):
        self.config = config
        base = workdir or Path.cwd() / ".kbot"
        self.checkout = base / "git" / config.name
        self.problems: list[DocumentError] = []
        self._commit: str | None = None
        self._branch: str | None = None
        self._mtimes: dict[str, float] = {}

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as e:
            raise ConnectorError("the git command is not installed on this machine") from e
        except subprocess.TimeoutExpired as e:
            raise ConnectorError(
                f"git {args[0]} of {self.config.url} took over {GIT_TIMEOUT_S}s"
            ) from e
        if out.returncode != 0:
            lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"exit code {out.returncode}"
            raise ConnectorError(f"git {args[0]} of {self.config.url} failed: {detail}")
        return out.stdout

    def _ensure_checkout(self) -> None:
        if self._commit is not None:
            return
        c = self.config
        if (self.checkout / ".git").is_dir():
            self._git("remote", "set-url", "origin", c.url, cwd=self.checkout)
            branch = c.branch or self._remote_default_branch()
            self._git("fetch", "--quiet", "origin", branch, cwd=self.checkout)
            self._git("checkout", "--quiet", "-B", branch, "FETCH_HEAD", cwd=self.checkout)
        else:
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            args = ["clone", "--quiet", "--single-branch"]
            if c.branch:
                args += ["--branch", c.branch]
            tmp = self.checkout.with_name(self.checkout.name + ".partial")
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            self._git(*args, c.url, str(tmp))
            tmp.rename(self.checkout)
        self._branch = self._git("rev-parse", "--abbrev-ref", "HEAD", cwd=self.checkout).strip()
        self._commit = self._git("rev-parse", "HEAD", cwd=self.checkout).strip()
        self._mtimes = self._last_commit_times()

    def _remote_default_branch(self) -> str:
        out = self._git("ls-remote", "--symref", "origin", "HEAD", cwd=self.checkout)
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/"):
                return line.split("refs/heads/", 1)[1].split()[0]
        raise ConnectorError(f"cannot tell the default branch of {self.config.url}; set `branch`")

    def _last_commit_times(self) -> dict[str, float]:
        """Each file's last change on the branch, from one pass over its first-parent log.

        Following first parents with merge diffs dates a file by when it reached the branch,
        not by when it was authored on a feature branch, so ``changed_since`` misses nothing.
        """
        out = self._git(
            "log",
            "--first-parent",
            "--diff-merges=first-parent",
            "--format=%x00%ct",
            "--name-only",
            "--no-renames",
            "HEAD",
            cwd=self.checkout,
        )
        times: dict[str, float] = {}
        stamp = 0.0
        for line in out.splitlines():
            if line.startswith("\0"):
                stamp = float(line[1:])
            elif line and line not in times:
                times[line] = stamp
        return times

    def _ids(self) -> list[str]:
        self._ensure_checkout()
        files = self._git("ls-files", "-z", cwd=self.checkout).split("\0")
        return sorted(
            f
            for f in files
            if f and file_format(f) and matches(f, self.config.include, self.config.exclude)
        )

    def _read(self, rel: str) -> Document | None:
        c = self.config
        if c.url_template:
            url = c.url_template.format(path=quote(rel), commit=self._commit, branch=self._branch)
        else:
            url = (self.checkout / rel).resolve().as_uri()
        stamp = self._mtimes.get(rel, 0.0)
        try:
            return read_document(
                self.checkout,
                rel,
                connector=c.name,
                audience=c.audience,
                url=url,
                last_modified=datetime.fromtimestamp(stamp, UTC),
            )
        except DocumentError as e:
            self.problems.append(e)
            return None

    def load_all(self) -> Iterator[Document]:
        self.problems = []
        for rel in self._ids():
            doc = self._read(rel)
            if doc is not None:
                yield doc

    def changed_since(self, since: datetime) -> Iterator[Document]:
        self.problems = []
        cutoff = since.timestamp()
        for rel in self._ids():
            if self._mtimes.get(rel, 0.0) >= cutoff:
                doc = self._read(rel)
                if doc is not None:
                    yield doc

    def list_ids(self) -> set[str]:
        return set(self._ids())
