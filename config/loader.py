"""Load ``kbot.yaml``: interpolate ``${ENV}`` secrets, validate, and explain what is wrong."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from config.models import KbotConfig, parse_schedule

DEFAULT_PATH = Path("config/kbot.yaml")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used. The message names file, connector and field."""


def config_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """``--config`` wins, then ``KBOT_CONFIG``, then ``config/kbot.yaml``."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("KBOT_CONFIG"):
        return Path(env["KBOT_CONFIG"])
    return DEFAULT_PATH


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> KbotConfig:
    """Read, interpolate and validate a config file. Raises ConfigError with every problem.

    ``env`` replaces ``os.environ`` for ``KBOT_CONFIG`` and ``${VAR}`` interpolation.
    """
    p = config_path(path, env)
    try:
        raw_text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: config file not found (looked for {p.absolute()}; "
            "pass --config PATH or set KBOT_CONFIG)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file ({e})") from None
    try:
        data = yaml.load(raw_text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML{_yaml_where(e)}") from None
    if not isinstance(data, dict):
        sections = ", ".join(_keys_at(KbotConfig, ()))
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections ({sections}), "
            f"not a {type(data).__name__}"
        )
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
    # A section whose keys are all commented out parses as null: treat it as empty.
    data = {k: v for k, v in data.items() if v is not None}
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
        valid = ", ".join(sorted(REGISTRY))
        if ctype is None:
            problems.append(f"{label}: field 'type': required, but missing; valid types: {valid}")
            continue
        if not isinstance(ctype, str) or ctype not in REGISTRY:
            problems.append(f"{label}: field 'type': unknown type {ctype!r}; valid types: {valid}")
            continue
        model, _ = REGISTRY[ctype]
        try:
            cfg = model.model_validate(raw, context=context)
        except ValidationError as e:
            problems.extend(f"{label}: {msg}" for msg in _explain(e, model))
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
        problems.extend(_explain(e, KbotConfig))
    if len(problems) == 1:
        raise ConfigError(f"{source}: invalid configuration: {problems[0]}")
    if problems:
        listed = "\n".join(f"  - {m}" for m in problems)
        raise ConfigError(f"{source}: invalid configuration ({len(problems)} problems):\n{listed}")
    assert config is not None
    config.connectors = connectors
    config.source = source
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a repeated key: PyYAML would silently keep only the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base constructor reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (only one is allowed)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_where(e: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` on one line, from a PyYAML error."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``loc`` below ``model``, if any."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid in the mapping at ``loc`` below ``model``."""
    found = _model_at(model, loc)
    return [] if found is None else [k for k, f in found.model_fields.items() if not f.exclude]


def _explain(e: ValidationError, model: type[BaseModel]) -> list[str]:
    # Input values are never quoted: they may hold interpolated secrets.
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(x) for x in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = _keys_at(model, loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            msg = f"unknown key; {hint}valid keys: {', '.join(valid)}"
        elif err["type"] == "missing":
            parent = _model_at(model, loc[:-1])
            field = parent.model_fields.get(str(loc[-1])) if parent is not None else None
            about = f" ({field.description})" if field is not None and field.description else ""
            msg = f"required, but missing{about}"
        elif err["type"] == "string_type":
            msg += " (put the value in quotes)"
        elif err["type"] == "model_type":
            msg = f"must be a mapping with the keys {', '.join(_keys_at(model, loc))}"
        out.append(f"field '{where}': {msg}")
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
