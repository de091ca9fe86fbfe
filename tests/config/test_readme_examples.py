"""Every kbot YAML example in README.md validates under the config schema, as an admin would
paste it: whole configs, ``connectors:`` lists, or a single connector block."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import KbotConfig, parse_config
from connectors import REGISTRY

README = Path(__file__).resolve().parents[2] / "README.md"
_OPEN = re.compile(r"^```ya?ml\s*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${VAR:-default} needs no value
SECTIONS = set(KbotConfig.model_fields) - {"source"}


def yaml_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of each ```yaml fenced block."""
    blocks: list[tuple[int, str]] = []
    start: int | None = None
    body: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if start is None:
            if _OPEN.match(line):
                start, body = n, []
        elif line.strip() == "```":
            blocks.append((start, "\n".join(body)))
            start = None
        else:
            body.append(line)
    return blocks


def as_config(data: Any) -> dict[str, Any] | None:
    """The block as a whole config; None when it is some other YAML (not kbot's)."""
    if isinstance(data, list) and data and all(isinstance(c, dict) and "type" in c for c in data):
        return {"connectors": data}
    if isinstance(data, dict) and {"name", "type"} <= set(data):
        return {"connectors": [data]}
    if isinstance(data, dict) and set(data) & SECTIONS:
        return dict(data)
    return None


def examples() -> list[tuple[int, str, dict[str, Any] | str]]:
    """(line, body, config) of each kbot example; a block that is not even YAML is kept
    with its parse error in place of the config, so that it fails below."""
    found: list[tuple[int, str, dict[str, Any] | str]] = []
    for line, body in yaml_blocks(README.read_text(encoding="utf-8")):
        try:
            config = as_config(yaml.safe_load(body))
        except yaml.YAMLError as e:
            found.append((line, body, f"not valid YAML: {e}"))
            continue
        if config is not None:
            found.append((line, body, config))
    return found


EXAMPLES = examples()


def test_the_readme_has_config_examples():
    assert len(EXAMPLES) >= 2, "no ```yaml kbot examples found in README.md"


def test_every_connector_type_has_a_readme_example():
    shown = {
        c.get("type")
        for _, _, cfg in EXAMPLES
        if isinstance(cfg, dict)
        for c in cfg.get("connectors") or []
    }
    missing = sorted(set(REGISTRY) - shown)
    assert not missing, f"connector types without a ```yaml example in README.md: {missing}"


@pytest.mark.parametrize(
    ("line", "body", "data"), EXAMPLES, ids=[f"README.md:{e[0]}" for e in EXAMPLES]
)
def test_readme_example_validates(line: int, body: str, data: dict[str, Any] | str, tmp_path: Path):
    if isinstance(data, str):
        pytest.fail(f"README.md:{line}: the ```yaml block is {data}")
    # Secrets come from the environment: give each ${VAR} the example names a value.
    env = {var: f"readme-example-{var.lower()}" for var in _VAR.findall(body)}
    data = {"storage": {"data_dir": str(tmp_path / "data")}, **data}
    for block in data.get("connectors") or []:
        # A filesystem example names a folder of the author's machine; the schema checks
        # that it exists, so it is pointed at a real (empty) folder here.
        if isinstance(block, dict) and block.get("type") == "filesystem" and "path" in block:
            block["path"] = str(tmp_path / "folder")
            (tmp_path / "folder").mkdir(exist_ok=True)
    config = parse_config(data, source=f"README.md:{line}", base_dir=tmp_path, env=env)
    names = [c.get("name") for c in data.get("connectors") or []]
    assert [c.name for c in config.connectors] == names
