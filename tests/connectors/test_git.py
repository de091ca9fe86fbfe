"""The git connector against tiny real repositories made with the git CLI."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors import Connector, build_connector
from connectors.base import ConnectorError
from connectors.git import GitConfig, GitConnector, redact
from tests.conftest import make_config
from tests.fake_http import QuietHTTPServer

T1 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
T2 = int(datetime(2024, 2, 1, tzinfo=UTC).timestamp())
T3 = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
T4 = int(datetime(2024, 4, 1, tzinfo=UTC).timestamp())


def at(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config (credential helpers, default branch names) leaks in."""
    empty = tmp_path_factory.mktemp("gitconfig") / "config"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSH_COMMAND"):
        monkeypatch.delenv(var, raising=False)


class Repo:
    """A source repository; every commit gets a controlled author and committer date."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str, when: int = T1) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
            "GIT_AUTHOR_DATE": f"{when} +0000",
            "GIT_COMMITTER_DATE": f"{when} +0000",
        }
        out = subprocess.run(
            ["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=True
        )
        return out.stdout

    def commit(self, when: int, files: dict[str, str | None], message: str = "change") -> str:
        """Write (or, for None, delete) files and commit them; returns the new sha."""
        for rel, text in files.items():
            p = self.path / rel
            if text is None:
                self.git("rm", "--quiet", "--", rel)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
            self.git("add", "--", rel)
        self.git("commit", "--quiet", "--allow-empty", "-m", message, when=when)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref).strip()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo(tmp_path / "origin")
    r.commit(T1, {"README.md": "# Read me\n", "guide/setup.md": "# Setup\n\nInstall.\n"})
    r.commit(T2, {"guide/setup.md": "# Setup\n\nInstall it.\n", "notes.txt": "plain\n"})
    r.commit(T3, {"img.png": "not really a png\n"})
    return r


def config(url: str | Path, name: str = "repo", **extra: Any) -> GitConfig:
    return GitConfig.model_validate({"name": name, "type": "git", "url": str(url), **extra})


def connector(url: str | Path, workdir: Path, **extra: Any) -> GitConnector:
    return GitConnector(config(url, **extra), workdir)


# --- reading ----------------------------------------------------------------------------


def test_clone_a_local_path(repo: Repo, tmp_path: Path) -> None:
    c = build_connector(config(repo.path), tmp_path / "data")
    assert isinstance(c, GitConnector) and isinstance(c, Connector)
    docs = {d.id: d for d in c.load_all()}
    assert sorted(docs) == ["README.md", "guide/setup.md", "notes.txt"]
    assert docs["guide/setup.md"].text == "# Setup\n\nInstall it."
    assert docs["guide/setup.md"].title == "Setup"
    assert docs["notes.txt"].format == "text"
    assert {d.connector for d in docs.values()} == {"repo"}
    # The working copy lives under the data dir, and the default link points into it.
    checkout = tmp_path / "data" / "git" / "repo"
    assert docs["README.md"].url == (checkout / "README.md").as_uri()
    assert c.problems == []


def test_last_modified_is_the_last_commit_touching_the_file(repo: Repo, tmp_path: Path) -> None:
    docs = {d.id: d for d in connector(repo.path, tmp_path / "w").load_all()}
    assert docs["README.md"].last_modified == at(T1)
    assert docs["guide/setup.md"].last_modified == at(T2)
    assert docs["notes.txt"].last_modified == at(T2)


def test_clone_a_file_url(repo: Repo, tmp_path: Path) -> None:
    c = connector(repo.path.as_uri(), tmp_path / "w")
    assert c.list_ids() == {"README.md", "guide/setup.md", "notes.txt"}


def test_branch_selection(repo: Repo, tmp_path: Path) -> None:
    repo.git("checkout", "--quiet", "-b", "release")
    repo.commit(T4, {"release-notes.md": "# 2.0\n", "README.md": None})
    repo.git("checkout", "--quiet", "main")
    c = connector(
        repo.path,
        tmp_path / "w",
        branch="release",
        url_template="https://git.example.com/tree/{branch}/{path}",
    )
    docs = {d.id: d for d in c.load_all()}
    assert sorted(docs) == ["guide/setup.md", "notes.txt", "release-notes.md"]
    assert docs["release-notes.md"].url == "https://git.example.com/tree/release/release-notes.md"
    assert docs["release-notes.md"].last_modified == at(T4)
    # The remote's default branch when none is set.
    assert "release-notes.md" not in connector(repo.path, tmp_path / "w2").list_ids()


def test_switching_branch_on_an_existing_checkout(repo: Repo, tmp_path: Path) -> None:
    repo.git("checkout", "--quiet", "-b", "release")
    repo.commit(T4, {"release-notes.md": "# 2.0\n"})
    repo.git("checkout", "--quiet", "main")
    work = tmp_path / "w"
    assert "release-notes.md" not in connector(repo.path, work).list_ids()
    assert "release-notes.md" in connector(repo.path, work, branch="release").list_ids()


def test_missing_branch_is_a_connector_error(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(ConnectorError) as e:
        connector(repo.path, tmp_path / "w", branch="no-such-branch").list_ids()
    assert str(repo.path) in str(e.value)
    assert "no-such-branch" in str(e.value)


def test_include_and_exclude_globs(repo: Repo, tmp_path: Path) -> None:
    assert connector(repo.path, tmp_path / "a", include=["**/*.md"]).list_ids() == {
        "README.md",
        "guide/setup.md",
    }
    assert connector(repo.path, tmp_path / "b", include=["guide/**/*.md"]).list_ids() == {
        "guide/setup.md"
    }
    assert connector(repo.path, tmp_path / "c", exclude=["guide/**"]).list_ids() == {
        "README.md",
        "notes.txt",
    }


def test_files_include_matched_but_kbot_cannot_read_are_counted(repo: Repo, tmp_path: Path) -> None:
    repo.commit(T4, {"source/layout.erb": "<%= yield %>", "logo.svg": "<svg/>"})
    c = connector(repo.path, tmp_path / "w", include=["**/*"])
    assert "source/layout.erb" not in c.list_ids()
    assert c.skipped == {".erb": 1, ".png": 1, ".svg": 1}


def test_url_template_with_commit_and_path(repo: Repo, tmp_path: Path) -> None:
    repo.commit(T4, {"guide/with space.md": "# Spaces\n"})
    c = connector(
        repo.path,
        tmp_path / "w",
        url_template="https://git.example.com/blob/{commit}/{path}",
        audience="eng",
    )
    docs = {d.id: d for d in c.load_all()}
    sha = repo.head()
    assert docs["README.md"].url == f"https://git.example.com/blob/{sha}/README.md"
    assert docs["guide/with space.md"].url == (
        f"https://git.example.com/blob/{sha}/guide/with%20space.md"
    )
    assert {d.audience for d in docs.values()} == {"eng"}


def test_non_ascii_file_names_are_dated(repo: Repo, tmp_path: Path) -> None:
    repo.commit(T4, {"wiki/café.md": "# Café\n", "wiki/Überblick notes.md": "# Ü\n"})
    c = connector(repo.path, tmp_path / "w")
    docs = {d.id: d for d in c.load_all()}
    assert docs["wiki/café.md"].last_modified == at(T4)
    assert docs["wiki/Überblick notes.md"].last_modified == at(T4)
    assert {d.id for d in c.changed_since(at(T4))} == {"wiki/café.md", "wiki/Überblick notes.md"}


def test_binary_file_is_a_problem_not_an_error(repo: Repo, tmp_path: Path) -> None:
    (repo.path / "blob.md").write_bytes(b"# x\n\x00\x00binary")
    repo.git("add", "blob.md")
    repo.git("commit", "--quiet", "-m", "binary", when=T4)
    c = connector(repo.path, tmp_path / "w")
    assert "blob.md" in c.list_ids()
    assert "blob.md" not in {d.id for d in c.load_all()}
    assert [p.doc_id for p in c.problems] == ["blob.md"]
    assert "binary" in c.problems[0].reason


def test_symlink_out_of_the_repository_is_refused(repo: Repo, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\npassword=hunter2\n")
    (repo.path / "leak.md").symlink_to(secret)
    (repo.path / "alias.md").symlink_to("README.md")
    repo.git("add", "leak.md", "alias.md")
    repo.git("commit", "--quiet", "-m", "links", when=T4)
    c = connector(repo.path, tmp_path / "w")
    docs = {d.id: d for d in c.load_all()}
    assert "leak.md" not in docs
    assert not any("hunter2" in d.text for d in docs.values())
    assert docs["alias.md"].text == "# Read me"
    assert [p.doc_id for p in c.problems] == ["leak.md"]


# --- updates ----------------------------------------------------------------------------


def test_next_instance_pulls_edits_additions_and_deletions(repo: Repo, tmp_path: Path) -> None:
    work = tmp_path / "w"
    template = {"url_template": "https://git.example.com/blob/{commit}/{path}"}
    first = {d.id: d for d in connector(repo.path, work, **template).load_all()}
    old_sha = repo.head()
    assert first["README.md"].url.endswith(f"/{old_sha}/README.md")

    new_sha = repo.commit(
        T4,
        {"README.md": "# Read me\n\nNow longer.\n", "notes.txt": None, "guide/new.md": "# New\n"},
    )
    c = connector(repo.path, work, **template)
    docs = {d.id: d for d in c.load_all()}
    assert sorted(docs) == ["README.md", "guide/new.md", "guide/setup.md"]
    assert docs["README.md"].text == "# Read me\n\nNow longer."
    assert docs["README.md"].last_modified == at(T4)
    assert docs["README.md"].url == f"https://git.example.com/blob/{new_sha}/README.md"
    assert docs["guide/setup.md"].last_modified == at(T2)
    assert c.list_ids() == set(docs)
    assert not (work / "git" / "repo" / "notes.txt").exists()


def test_one_instance_reads_one_commit(repo: Repo, tmp_path: Path) -> None:
    c = connector(repo.path, tmp_path / "w")
    assert c.list_ids() == {"README.md", "guide/setup.md", "notes.txt"}
    repo.commit(T4, {"late.md": "# Late\n"})
    assert "late.md" not in {d.id for d in c.load_all()}


def test_changed_since_returns_files_changed_after_the_time(repo: Repo, tmp_path: Path) -> None:
    c = connector(repo.path, tmp_path / "w")
    assert {d.id for d in c.changed_since(at(T2))} == {"guide/setup.md", "notes.txt"}
    assert {d.id for d in c.changed_since(at(T2 + 1))} == set()
    assert {d.id for d in c.changed_since(at(T1))} == {"README.md", "guide/setup.md", "notes.txt"}


def test_merged_feature_branch_with_old_dates_is_seen(repo: Repo, tmp_path: Path) -> None:
    """A file authored on a branch in January but merged in April changed, for us, in April."""
    repo.git("checkout", "--quiet", "-b", "feature", "HEAD~2")
    repo.commit(T1 + 60, {"guide/feature.md": "# Feature\n", "README.md": "# Read me v2\n"})
    repo.git("checkout", "--quiet", "main")
    repo.git("merge", "--quiet", "--no-ff", "-m", "merge feature", "feature", when=T4)
    c = connector(repo.path, tmp_path / "w")
    changed = {d.id: d for d in c.changed_since(at(T3))}
    assert set(changed) == {"guide/feature.md", "README.md"}
    assert changed["guide/feature.md"].last_modified == at(T4)
    assert changed["README.md"].text == "# Read me v2"


def test_late_push_of_an_old_commit_is_seen_by_the_next_instance(
    repo: Repo, tmp_path: Path
) -> None:
    """A commit made in January but pushed after a March sync must still be picked up."""
    work = tmp_path / "w"
    assert connector(repo.path, work).list_ids()
    repo.commit(T1 + 60, {"notes.txt": "edited long ago\n", "old-draft.md": "# Draft\n"})
    c = connector(repo.path, work)
    changed = {d.id: d for d in c.changed_since(at(T4))}
    assert set(changed) == {"notes.txt", "old-draft.md"}
    assert changed["notes.txt"].text == "edited long ago"
    # A later instance with nothing new fetched is back to dates alone.
    assert list(connector(repo.path, work).changed_since(at(T4))) == []


def test_leftovers_of_an_interrupted_clone_are_replaced(repo: Repo, tmp_path: Path) -> None:
    work = tmp_path / "w"
    (work / "git" / "repo.partial" / "junk").mkdir(parents=True)
    (work / "git" / "repo" / "half").mkdir(parents=True)  # no .git inside
    assert connector(repo.path, work).list_ids() == {"README.md", "guide/setup.md", "notes.txt"}
    assert not (work / "git" / "repo.partial").exists()
    assert not (work / "git" / "repo" / "half").exists()


# --- failures ---------------------------------------------------------------------------


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns a hang into a 'took over' error, so a regression fails instead of blocking."""
    monkeypatch.setattr("connectors.git.GIT_TIMEOUT_S", 60)


@pytest.mark.parametrize("kind", ["path", "file-url"])
def test_nonexistent_remote_is_a_connector_error_naming_it(
    tmp_path: Path, kind: str, short_timeout: None
) -> None:
    missing = tmp_path / "no-such-repo"
    url = str(missing) if kind == "path" else missing.as_uri()
    c = connector(url, tmp_path / "w")
    with pytest.raises(ConnectorError) as e:
        c.list_ids()
    msg = str(e.value)
    assert msg.startswith(f"git clone of {url} failed: ")
    assert "took over" not in msg
    assert not (tmp_path / "w" / "git" / "repo").exists()


def test_folder_that_is_not_a_repository_is_a_connector_error(
    tmp_path: Path, short_timeout: None
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConnectorError, match=f"git clone of {plain} failed"):
        connector(plain, tmp_path / "w").list_ids()


def test_remote_gone_after_the_first_clone_is_a_connector_error(
    repo: Repo, tmp_path: Path, short_timeout: None
) -> None:
    work = tmp_path / "w"
    assert connector(repo.path, work).list_ids()
    repo.path.rename(tmp_path / "moved")
    with pytest.raises(ConnectorError) as e:
        connector(repo.path, work).list_ids()
    assert str(repo.path) in str(e.value)


class _AuthRequired(BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.paths.append(self.path)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP git remote on 127.0.0.1 that asks for credentials on every request."""
    handler = type("Handler", (_AuthRequired,), {"paths": []})
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler.paths
    server.shutdown()
    server.server_close()
    thread.join()


def test_remote_asking_for_credentials_fails_without_prompting(
    tmp_path: Path,
    auth_server: tuple[str, list[str]],
    short_timeout: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, paths = auth_server
    # A prompt program the environment offers; the connector must not let git run it (in
    # production it would be a GUI dialog or a terminal prompt nobody answers).
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f'#!/bin/sh\necho "$1" >> {asked}\necho guessed\n')
    askpass.chmod(0o755)
    monkeypatch.setenv("GIT_ASKPASS", str(askpass))
    monkeypatch.setenv("SSH_ASKPASS", str(askpass))
    url = f"http://{host}/acme/runbooks.git"
    with pytest.raises(ConnectorError) as e:
        connector(url, tmp_path / "w").list_ids()
    msg = str(e.value)
    assert msg.startswith(f"git clone of {url} failed: ")
    assert "took over" not in msg
    assert paths and paths[0].startswith("/acme/runbooks.git/info/refs")
    assert not asked.exists()


def test_credentials_in_the_url_never_reach_the_message(
    tmp_path: Path, auth_server: tuple[str, list[str]], short_timeout: None
) -> None:
    host, _ = auth_server
    url = f"http://deploy:s3cr3t-token@{host}/acme/runbooks.git"
    with pytest.raises(ConnectorError) as e:
        connector(url, tmp_path / "w").list_ids()
    msg = str(e.value)
    assert "s3cr3t-token" not in msg
    assert f"http://***@{host}/acme/runbooks.git" in msg


def test_redact() -> None:
    assert redact("https://x-access-token:ghp_abc@github.com/a/b.git") == (
        "https://***@github.com/a/b.git"
    )
    assert redact("fatal: 'https://tok@h/r' failed") == "fatal: 'https://***@h/r' failed"
    assert redact("git@github.com:acme/repo.git") == "git@github.com:acme/repo.git"
    assert redact("/srv/repos/a@b") == "/srv/repos/a@b"


# --- configuration ----------------------------------------------------------------------


def test_relative_url_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = GitConfig.model_validate(
        {"name": "r", "type": "git", "url": "../repos/kb"}, context={"base_dir": tmp_path / "etc"}
    )
    assert cfg.url == str(tmp_path / "repos" / "kb")


@pytest.mark.parametrize(
    "url",
    ["https://github.com/acme/kb.git", "ssh://git@host/kb.git", "git@github.com:acme/kb.git"],
)
def test_remote_urls_are_kept_as_written(url: str, tmp_path: Path) -> None:
    cfg = GitConfig.model_validate(
        {"name": "r", "type": "git", "url": url}, context={"base_dir": tmp_path}
    )
    assert cfg.url == url


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"url": ""}, "must not be empty"),
        ({"url": "--upload-pack=touch /tmp/x"}, "not start with '-'"),
        ({"url": "/r", "branch": "-b"}, "must be a branch name"),
        ({"url": "/r", "url_template": "https://x/{sha}/{path}"}, "{commit}"),
        ({"url": "/r", "depth": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_git_config_is_explained(extra: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as e:
        GitConfig.model_validate({"name": "r", "type": "git", **extra})
    assert complaint in str(e.value)


# --- end to end -------------------------------------------------------------------------


def test_sync_through_the_indexer_follows_the_repository(runtime_factory, tmp_path: Path) -> None:
    repo = Repo(tmp_path / "origin")
    repo.commit(
        T1,
        {
            "a.md": "# Alpha\n\nThe alpha service restarts nightly.\n",
            "b.md": "# Beta\n\nBeta is deprecated.\n",
            "c.md": "# Gamma\n\nGamma owns the billing queue.\n",
        },
    )
    rt = runtime_factory(
        make_config(
            tmp_path,
            [
                {
                    "name": "kb",
                    "type": "git",
                    "url": str(repo.path),
                    "url_template": "https://git.example.com/{branch}/{path}",
                }
            ],
        )
    )
    [first] = rt.indexer.sync()
    assert first.ok, first.error
    assert (first.added, first.updated, first.deleted, first.unchanged) == (3, 0, 0, 0)

    repo.commit(
        T2,
        {
            "a.md": "# Alpha\n\nThe alpha service restarts every hour.\n",
            "b.md": None,
            "d.md": "# Delta\n\nDelta pages the on-call.\n",
        },
    )
    [second] = rt.indexer.sync()
    assert second.ok, second.error
    assert (second.added, second.updated, second.deleted, second.unchanged) == (1, 1, 1, 1)

    # No new files, so this run takes the changed_since path; the commit's old date must
    # not hide it.
    repo.commit(T1 + 60, {"c.md": "# Gamma\n\nGamma moved to the ledger team.\n"})
    [third] = rt.indexer.sync()
    assert third.ok, third.error
    assert (third.added, third.updated, third.deleted, third.unchanged) == (0, 1, 0, 2)

    got = rt.indexer.store.collection.get(include=["documents", "metadatas"])
    by_doc: dict[str, str] = {}
    for text, meta in zip(got["documents"], got["metadatas"], strict=True):
        by_doc[meta["doc_id"]] = by_doc.get(meta["doc_id"], "") + text
        assert meta["url"] == f"https://git.example.com/main/{meta['doc_id']}"
    assert sorted(by_doc) == ["a.md", "c.md", "d.md"]
    assert "every hour" in by_doc["a.md"]
    assert "ledger team" in by_doc["c.md"]
