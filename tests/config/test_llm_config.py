"""The ``llm:`` section: key names, ${ENV} keys, defaults, prices and actionable errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config import ConfigError, load_config
from config.models import DEFAULT_PRICES, ModelPrice


def load(tmp_path: Path, llm: str, env: dict[str, str] | None = None):
    path = tmp_path / "kbot.yaml"
    path.write_text("llm:\n" + textwrap.indent(textwrap.dedent(llm), "  "), encoding="utf-8")
    return load_config(path, env=env or {})


def test_no_llm_section_means_extractive(tmp_path: Path) -> None:
    path = tmp_path / "kbot.yaml"
    path.write_text("answering: {top_k: 5}\n", encoding="utf-8")
    assert load_config(path, env={}).llm is None


def test_the_issue_example_loads_with_the_key_from_the_environment(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        provider: openai
        model: gpt-4o-mini
        base_url: http://127.0.0.1:8000/v1
        api_key: ${OPENAI_API_KEY}
        timeout_s: 20
        """,
        env={"OPENAI_API_KEY": "sk-secret-value"},
    ).llm
    assert cfg is not None
    assert (cfg.provider, cfg.model, cfg.base_url) == (
        "openai",
        "gpt-4o-mini",
        "http://127.0.0.1:8000/v1",
    )
    assert cfg.api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(cfg)
    assert (cfg.temperature, cfg.timeout_s, cfg.cache) == (0, 20, True)


def test_a_missing_key_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load(tmp_path, "provider: openai\nmodel: gpt-4o\napi_key: ${OPENAI_API_KEY}\n")


@pytest.mark.parametrize(
    ("llm", "expected"),
    [
        ("provider: openia\nmodel: x\n", "openai_compatible"),
        ("provider: openai_compatible\nmodel: local\n", "needs base_url"),
        ("provider: openai\nmodel: gpt-4o\nmodle: x\n", "modle"),
        ("provider: openai\nmodel: gpt-4o\ntimeout_s: 0\n", "timeout_s"),
    ],
)
def test_mistakes_are_explained(tmp_path: Path, llm: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, llm)
    assert expected in str(info.value)
    assert "llm" in str(info.value)


def test_prices_come_from_config_then_the_built_in_list_by_longest_prefix(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        provider: openai
        model: gpt-4o-mini-2024-07-18
        prices:
          gpt-4o: {input: 2.0, output: 8.0}
          my-local-llama: {input: 0, output: 0}
        """,
    ).llm
    assert cfg is not None
    assert cfg.price() == DEFAULT_PRICES["gpt-4o-mini"]  # the longest prefix wins
    assert cfg.price("gpt-4o-2024-08-06") == ModelPrice(input=2.0, output=8.0)
    assert cfg.price("my-local-llama") == ModelPrice(input=0, output=0)
    assert cfg.price("claude-3-5-haiku-20241022") == DEFAULT_PRICES["claude-3-5-haiku"]
    assert cfg.price("some-unknown-model") is None


def test_the_commented_example_in_kbot_yaml_is_valid(tmp_path: Path) -> None:
    shipped = (Path(__file__).resolve().parents[2] / "config" / "kbot.yaml").read_text()
    lines = shipped.splitlines()
    start = lines.index("# llm:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    path = tmp_path / "kbot.yaml"
    path.write_text("\n".join(block) + "\n", encoding="utf-8")
    cfg = load_config(path, env={"OPENAI_API_KEY": "sk-x"}).llm
    assert cfg is not None and cfg.model == "gpt-4o-mini"
    assert cfg.prices["gpt-4o-mini"].cached == 0.075
