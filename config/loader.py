"""Load ``kbot.yaml``: interpolate ``${ENV}`` secrets, validate, and explain what is wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.models import KbotConfig, parse_schedule

DEFAULT_PATH = Path("config/kbot.yaml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used. The message names file, connector and field."""


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config`` wins, then ``KBOT_CONFIG``, then ``config/kbot.yaml``."""
    if explicit:
        return Path(explicit)
    if os.environ.get("KBOT_CONFIG"):
        return Path(os.environ["KBOT_CONFIG"])
    return DEFAULT_PATH


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> KbotConfig:
    """Read, interpolate and validate a config file. Raises ConfigError with every problem."""
    p = config_path(path)
    try:
        raw_text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: config file not found (pass --config PATH or set KBOT_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file ({e})") from None
    try:
        data = yaml.safe_load(raw_text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return parse_config(data, source=str(p), base_dir=p.resolve().parent, env=env)


def parse_config(
    data: dict[str, Any],
    *,
    source: str = "<memory>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> KbotConfig:
    """Validate an already-parsed config mapping (see ``load_config``)."""
    from connectors import REGISTRY

    env = os.environ if env is None else env
    problems: list[str] = []
    names = _connector_names(data)
    data = _interpolate(data, env, [], problems, names)
    context = {"base_dir": base_dir or Path.cwd()}

    raw_connectors = data.pop("connectors", None) or []
    if not isinstance(raw_connectors, list):
        problems.append("field 'connectors': must be a list of connector blocks")
        raw_connectors = []

    connectors = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_connectors):
        where = f"connectors[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a mapping with name, type, schedule, ...")
            continue
        name = raw.get("name")
        label = f"connector {name!r} ({where})" if name else where
        ctype = raw.get("type")
        if ctype not in REGISTRY:
            valid = ", ".join(sorted(REGISTRY))
            what = "missing" if ctype is None else f"unknown type {ctype!r}"
            problems.append(f"{label}: field 'type': {what}; valid types: {valid}")
            continue
        model, _ = REGISTRY[ctype]
        try:
            cfg = model.model_validate(raw, context=context)
        except ValidationError as e:
            problems.extend(f"{label}: {msg}" for msg in _explain(e))
            continue
        try:
            parse_schedule(cfg.schedule)
        except ValueError as e:
            problems.append(f"{label}: field 'schedule': {e}")
            continue
        if cfg.name in seen:
            problems.append(
                f"{label}: field 'name': duplicate name {cfg.name!r} "
                f"(also connectors[{seen[cfg.name]}]); names must be unique"
            )
            continue
        seen[cfg.name] = i
        connectors.append(cfg)

    config = None
    try:
        config = KbotConfig.model_validate(data, context=context)
    except ValidationError as e:
        problems.extend(_explain(e))
    if problems:
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(f"  - {m}" for m in problems))
    assert config is not None
    config.connectors = connectors
    config.source = source
    return config


def _explain(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the configuration reference in README.md)"
        elif err["type"] == "missing":
            msg = "required, but missing"
        out.append(f"field '{loc}': {msg}")
    return out


def _connector_names(data: dict[str, Any]) -> dict[int, str]:
    raw = data.get("connectors")
    if not isinstance(raw, list):
        return {}
    return {i: c["name"] for i, c in enumerate(raw) if isinstance(c, dict) and c.get("name")}


def _interpolate(
    node: Any, env: Mapping[str, str], path: list[Any], problems: list[str], names: dict[int, str]
) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, [*path, k], problems, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, [*path, i], problems, names) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        problems.append(
            f"{_where(path, names)}: environment variable {var} is not set "
            f"(export it, or write ${{{var}:-default}})"
        )
        return ""

    return _VAR.sub(sub, node)


def _where(path: list[Any], names: dict[int, str]) -> str:
    if len(path) >= 2 and path[0] == "connectors":
        rest = ".".join(str(x) for x in path[2:])
        label = f"connectors[{path[1]}]"
        if path[1] in names:
            label = f"connector {names[path[1]]!r} ({label})"
        return f"{label}: field '{rest}'"
    return "field '" + ".".join(str(x) for x in path) + "'"
