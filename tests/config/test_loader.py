"""Loading kbot.yaml: defaults, precedence, ${ENV} secrets, and one actionable error per mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import config
from config import ConfigError, load_config, parse_schedule
from config.loader import DEFAULT_PATH, config_path
from config.models import BUNDLED_MODEL, AnsweringConfig, IndexerConfig, RetrievalConfig
from connectors import REGISTRY

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    return folder


def write(tmp_path: Path, text: str, name: str = "kbot.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_for(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value)


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} missing from: {message}"


FS = """\
connectors:
  - name: docs
    type: filesystem
    path: kb
"""


# -- the happy path and its defaults ------------------------------------------------------


def test_minimal_config_gets_defaults_relative_to_its_folder(tmp_path, kb):
    cfg = load_config(write(tmp_path, FS), env={})
    assert cfg.source == str(tmp_path / "kbot.yaml")
    assert cfg.storage.data_dir == tmp_path / ".kbot"
    assert cfg.storage.database_url is None
    assert cfg.storage.sqlalchemy_url == f"sqlite:///{tmp_path / '.kbot' / 'kbot.db'}"
    assert cfg.storage.chroma_path == tmp_path / ".kbot" / "chroma"
    assert cfg.embedding.model == BUNDLED_MODEL
    assert cfg.indexer.chunk_size == 1000
    assert cfg.answering.min_score == 0.45
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8080)
    [docs] = cfg.connectors
    assert (docs.name, docs.type, docs.path, docs.schedule) == ("docs", "filesystem", kb, "1h")
    assert cfg.connector("docs") is docs


def test_bundled_model_name_matches_the_embedder():
    from indexer.embeddings import DEFAULT_MODEL

    assert BUNDLED_MODEL == DEFAULT_MODEL


def test_relative_paths_do_not_depend_on_the_working_directory(tmp_path, kb, monkeypatch):
    sections = """\
        storage:
          data_dir: state
          database_url: sqlite:///db/kbot.db
        embedding:
          model: models/mini
        """
    write(tmp_path, textwrap.dedent(sections) + FS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "kbot.yaml", env={})
    assert cfg.storage.data_dir == tmp_path / "state"
    assert cfg.storage.sqlalchemy_url == f"sqlite:///{tmp_path / 'db' / 'kbot.db'}"
    assert cfg.embedding.model == str(tmp_path / "models" / "mini")
    assert cfg.connectors[0].path == kb


def test_absolute_and_in_memory_database_urls_are_kept(tmp_path):
    for url in ("sqlite:////var/lib/kbot.db", "sqlite:///:memory:", "postgresql+psycopg://h/kbot"):
        cfg = load_config(write(tmp_path, f"storage:\n  database_url: '{url}'\n"), env={})
        assert cfg.storage.sqlalchemy_url == url


def test_empty_file_and_empty_sections_mean_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), env={}).connectors == []
    cfg = load_config(write(tmp_path, "storage:\nserver:\n  # port: 9000\nconnectors:\n"), env={})
    assert cfg.server.port == 8080
    assert cfg.storage.data_dir == tmp_path / ".kbot"


def test_shipped_config_loads_and_points_at_the_bundled_knowledge():
    cfg = load_config(REPO / "config" / "kbot.yaml", env={})
    assert cfg.storage.data_dir == REPO / ".kbot"
    [sample] = cfg.connectors
    assert sample.type == "filesystem"
    assert sample.path == REPO / "knowledge"
    assert any(sample.path.rglob("*.md"))
    parse_schedule(sample.schedule)


def test_shipped_config_keeps_the_measured_defaults():
    """The values the shipped file spells out are the defaults `kbot eval` measured: a
    number copied into it must not drift from the one the evaluation chose."""
    shipped = load_config(REPO / "config" / "kbot.yaml", env={})
    for section, model in (
        ("answering", AnsweringConfig),
        ("indexer", IndexerConfig),
        ("retrieval", RetrievalConfig),
    ):
        assert getattr(shipped, section) == model(), section


def test_package_exports():
    assert set(config.__all__) >= {"ConfigError", "KbotConfig", "load_config", "parse_schedule"}


# -- where the config comes from ----------------------------------------------------------


def test_config_path_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("KBOT_CONFIG", raising=False)
    assert config_path() == DEFAULT_PATH == Path("config/kbot.yaml")
    monkeypatch.setenv("KBOT_CONFIG", str(tmp_path / "from-env.yaml"))
    assert config_path() == tmp_path / "from-env.yaml"
    assert config_path(tmp_path / "explicit.yaml") == tmp_path / "explicit.yaml"
    # An explicit env mapping replaces os.environ.
    assert config_path(env={}) == DEFAULT_PATH
    assert config_path(env={"KBOT_CONFIG": "x.yaml"}) == Path("x.yaml")
    assert config_path("y.yaml", env={"KBOT_CONFIG": "x.yaml"}) == Path("y.yaml")


def test_load_config_reads_kbot_config(tmp_path, kb, monkeypatch):
    env_file = write(tmp_path, FS.replace("docs", "from-env"), "env.yaml")
    explicit = write(tmp_path, FS.replace("docs", "explicit"), "explicit.yaml")
    monkeypatch.setenv("KBOT_CONFIG", str(env_file))
    assert load_config().connectors[0].name == "from-env"
    assert load_config(explicit).connectors[0].name == "explicit"
    assert load_config(env={"KBOT_CONFIG": str(explicit)}).connectors[0].name == "explicit"


# -- ${ENV} interpolation ----------------------------------------------------------------


def test_secrets_and_values_come_from_the_environment(tmp_path, kb):
    path = write(
        tmp_path,
        """\
        storage:
          database_url: postgresql+psycopg://kbot:${DB_PASSWORD}@${DB_HOST:-127.0.0.1}/kbot
        server:
          port: ${PORT}
        connectors:
          - name: docs
            type: filesystem
            path: ${KB_DIR}
            audience: ${AUDIENCE:-staff}
        """,
    )
    cfg = load_config(path, env={"DB_PASSWORD": "s3cr3t!", "PORT": "9001", "KB_DIR": str(kb)})
    assert cfg.storage.database_url == "postgresql+psycopg://kbot:s3cr3t!@127.0.0.1/kbot"
    assert cfg.server.port == 9001
    assert cfg.connectors[0].path == kb
    assert cfg.connectors[0].audience == "staff"

    cfg = load_config(
        path,
        env={"DB_PASSWORD": "x", "DB_HOST": "db", "PORT": "1", "KB_DIR": "kb", "AUDIENCE": "ops"},
    )
    assert cfg.storage.database_url == "postgresql+psycopg://kbot:x@db/kbot"
    assert cfg.connectors[0].audience == "ops"


def test_load_config_uses_os_environ_by_default(tmp_path, kb, monkeypatch):
    monkeypatch.setenv("KBOT_TEST_KB", str(kb))
    cfg = load_config(write(tmp_path, FS.replace("path: kb", "path: ${KBOT_TEST_KB}")))
    assert cfg.connectors[0].path == kb


def test_unset_variable_names_the_field_and_the_fix(tmp_path, kb):
    path = write(
        tmp_path,
        """\
        storage:
          database_url: postgresql+psycopg://kbot:${DB_PASSWORD}@db/kbot
        connectors:
          - name: docs
            type: filesystem
            path: ${KB_DIR}
        """,
    )
    msg = error_for(path)
    assert_names(
        msg,
        str(path),
        "2 problems",
        "field 'storage.database_url': environment variable DB_PASSWORD is not set",
        "connector 'docs' (connectors[0]): field 'path': environment variable KB_DIR is not set",
        "${KB_DIR:-default}",
    )


def test_an_invalid_secret_is_not_echoed(tmp_path):
    path = write(tmp_path, "indexer:\n  chunk_size: ${SECRET}\n")
    msg = error_for(path, env={"SECRET": "hunter2-token"})
    assert_names(msg, str(path), "field 'indexer.chunk_size'", "integer")
    assert "hunter2" not in msg


# -- file-level mistakes -------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = error_for(path)
    assert_names(msg, str(path), "not found", "--config", "KBOT_CONFIG")


def test_a_folder_is_not_a_config_file(tmp_path):
    assert_names(error_for(tmp_path), str(tmp_path), "cannot read config file")


def test_invalid_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "storage:\n  data_dir: [unclosed\nserver:\n  port: 1\n")
    msg = error_for(path)
    assert_names(msg, str(path), "not valid YAML at line 3, column")
    assert "\n" not in msg


def test_duplicate_yaml_keys_are_refused(tmp_path, kb):
    # PyYAML keeps the last of two blocks silently; the first list of connectors would vanish.
    path = write(tmp_path, FS + FS)
    msg = error_for(path)
    assert_names(msg, str(path), "line 5", "duplicate key 'connectors'")
    inner = write(tmp_path, FS + "    schedule: 1h\n    schedule: 2h\n", "inner.yaml")
    assert_names(error_for(inner), "duplicate key 'schedule'")


def test_yaml_merge_keys_may_be_overridden(tmp_path, kb):
    path = write(
        tmp_path,
        """\
        connectors:
          - &base
            name: a
            type: filesystem
            path: kb
            schedule: 1d
          - <<: *base
            name: b
            schedule: 2h
        """,
    )
    cfg = load_config(path, env={})
    assert [(c.name, c.path, c.schedule) for c in cfg.connectors] == [
        ("a", kb, "1d"),
        ("b", kb, "2h"),
    ]


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- storage\n- connectors\n")
    assert_names(error_for(path), str(path), "top level must be a mapping", "storage", "list")


# -- connector mistakes --------------------------------------------------------------------


# Every registered type, in the order the error lists them.
VALID_TYPES = "valid types: " + ", ".join(sorted(REGISTRY))


def test_unknown_connector_type_lists_the_valid_ones(tmp_path, kb):
    path = write(tmp_path, FS.replace("type: filesystem", "type: ftp"))
    msg = error_for(path)
    assert_names(msg, str(path), "connector 'docs' (connectors[0])", "field 'type'", "'ftp'")
    assert_names(msg, VALID_TYPES)
    assert "\n" not in msg


def test_unhashable_type_is_reported_not_crashed(tmp_path, kb):
    msg = error_for(write(tmp_path, FS.replace("type: filesystem", "type: [filesystem]")))
    assert_names(msg, "field 'type'", VALID_TYPES)


def test_missing_type(tmp_path, kb):
    msg = error_for(write(tmp_path, FS.replace("    type: filesystem\n", "")))
    assert_names(msg, "connector 'docs' (connectors[0])", "field 'type'", "required")
    assert_names(msg, VALID_TYPES)


def test_missing_path(tmp_path):
    path = write(tmp_path, FS.replace("    path: kb\n", ""))
    msg = error_for(path)
    assert_names(msg, str(path), "connector 'docs' (connectors[0])", "field 'path'", "required")


def test_missing_git_url_says_what_it_should_be(tmp_path):
    path = write(tmp_path, "connectors:\n  - name: repo\n    type: git\n")
    msg = error_for(path)
    assert_names(msg, "connector 'repo' (connectors[0])", "field 'url'", "clone URL")


def test_path_to_a_missing_folder(tmp_path):
    path = write(tmp_path, FS.replace("path: kb", "path: no-such-folder"))
    msg = error_for(path)
    assert_names(
        msg, str(path), "connector 'docs'", "field 'path'", str(tmp_path / "no-such-folder")
    )
    assert "does not exist" in msg


def test_path_to_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "a.md").write_text("# A\n")
    msg = error_for(write(tmp_path, FS.replace("path: kb", "path: a.md")))
    assert_names(msg, "field 'path'", "not a folder")


def test_duplicate_connector_name(tmp_path, kb):
    path = write(
        tmp_path,
        FS + "  - name: docs\n    type: git\n    url: https://example.invalid/r.git\n",
    )
    msg = error_for(path)
    assert_names(
        msg,
        str(path),
        "connector 'docs' (connectors[1])",
        "field 'name'",
        "duplicate",
        "connectors[0]",
        "unique",
    )


def test_connector_without_a_name_is_labelled_by_index(tmp_path, kb):
    msg = error_for(write(tmp_path, "connectors:\n  - type: filesystem\n    path: kb\n"))
    assert_names(msg, "connectors[0]: field 'name': required")


def test_connectors_must_be_a_list_of_mappings(tmp_path):
    msg = error_for(write(tmp_path, "connectors:\n  name: docs\n"))
    assert_names(msg, "field 'connectors'", "list")
    msg = error_for(write(tmp_path, "connectors:\n  - docs\n"))
    assert_names(msg, "connectors[0]", "mapping")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("'61 * * * *'", "higher than the maximum"),
        ("'* * *'", "5-field cron"),
        ("15x", "neither an interval"),
        ("0m", "must be positive"),
        ("15", "quotes"),
    ],
)
def test_bad_schedule(tmp_path, kb, schedule, expected):
    path = write(tmp_path, FS + f"    schedule: {schedule}\n")
    msg = error_for(path)
    assert_names(msg, str(path), "connector 'docs' (connectors[0])", "field 'schedule'", expected)


def test_typo_in_a_connector_suggests_the_key(tmp_path, kb):
    path = write(tmp_path, FS + "    exlude: [drafts/**]\n")
    msg = error_for(path)
    assert_names(
        msg,
        str(path),
        "connector 'docs' (connectors[0])",
        "field 'exlude': unknown key",
        "did you mean 'exclude'?",
        "url_template",
    )


def test_typo_in_a_section_suggests_the_key(tmp_path):
    path = write(tmp_path, "indexer:\n  chunk_sise: 500\n")
    msg = error_for(path)
    assert_names(
        msg,
        str(path),
        "field 'indexer.chunk_sise': unknown key",
        "did you mean 'chunk_size'?",
        "valid keys: chunk_size, chunk_overlap, max_delete_fraction",
    )


def test_typo_in_a_section_name(tmp_path):
    msg = error_for(write(tmp_path, "indxer:\n  chunk_size: 500\n"))
    assert_names(msg, "field 'indxer': unknown key", "did you mean 'indexer'?", "connectors")


def test_section_that_is_not_a_mapping(tmp_path):
    msg = error_for(write(tmp_path, "server: 8080\n"))
    assert_names(msg, "field 'server'", "mapping", "host, port")


@pytest.mark.parametrize(
    ("yaml_text", "field", "valid"),
    [
        ("indexer:\n  chunk_size: 50\n", "indexer.chunk_size", "greater than or equal to 200"),
        ("answering:\n  min_score: 1.5\n", "answering.min_score", "less than or equal to 1"),
        ("server:\n  port: 70000\n", "server.port", "less than or equal to 65535"),
        ("indexer:\n  max_delete_fraction: 0\n", "indexer.max_delete_fraction", "greater than 0"),
    ],
)
def test_out_of_range_values(tmp_path, yaml_text, field, valid):
    path = write(tmp_path, yaml_text)
    assert_names(error_for(path), str(path), f"field '{field}'", valid)


def test_invalid_connector_value(tmp_path, kb):
    msg = error_for(write(tmp_path, FS.replace("name: docs", "name: 'my docs'")))
    assert_names(msg, "connector 'my docs' (connectors[0])", "field 'name'", "pattern")


def test_every_problem_is_reported_at_once(tmp_path, kb):
    path = write(
        tmp_path,
        """\
        indexer:
          chunk_size: 10
        connectors:
          - name: a
            type: ftp
          - name: b
            type: filesystem
            path: kb
            schedule: soon
        """,
    )
    msg = error_for(path)
    assert_names(
        msg,
        "3 problems",
        "field 'indexer.chunk_size'",
        "connector 'a' (connectors[0]): field 'type'",
        "connector 'b' (connectors[1]): field 'schedule'",
    )
    assert len(msg.splitlines()) == 4


def test_unknown_connector_lookup_names_the_configured_ones(tmp_path, kb):
    cfg = load_config(write(tmp_path, FS), env={})
    with pytest.raises(KeyError) as info:
        cfg.connector("wiki")
    assert_names(info.value.args[0], "'wiki'", str(tmp_path / "kbot.yaml"), "configured: docs")


# -- schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("15m", ("interval", 900)),
        ("1h", ("interval", 3600)),
        ("1d", ("interval", 86400)),
        ("30s", ("interval", 30)),
        (" 2h ", ("interval", 7200)),
        ("*/5 * * * *", ("cron", "*/5 * * * *")),
        ("0 3 * * 1-5", ("cron", "0 3 * * 1-5")),
    ],
)
def test_parse_schedule(value, parsed):
    assert parse_schedule(value) == parsed


@pytest.mark.parametrize("value", ["", "0h", "61 * * * *", "every hour", "1w", "* * * * * *"])
def test_parse_schedule_rejects(value):
    with pytest.raises(ValueError):
        parse_schedule(value)


def test_redis_url_is_a_redis_url_and_an_unset_variable_means_none(tmp_path):
    good = write(tmp_path, "storage:\n  redis_url: ${REDIS_URL:-}\n")
    assert load_config(good, env={}).storage.redis_url is None
    url = "redis://:pw@127.0.0.1:6379/2"
    assert load_config(good, env={"REDIS_URL": url}).storage.redis_url == url
    bad = write(tmp_path, "storage:\n  redis_url: http://127.0.0.1:6379\n", "bad.yaml")
    assert_names(error_for(bad), "storage.redis_url", "redis://", "http://127.0.0.1:6379")
