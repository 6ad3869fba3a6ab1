"""Reading a configuration: the YAML file (`-c`), the `key=value` overrides, and the one-line
descriptions of what pydantic refused. Every refusal is a ConfigError naming the file, line or key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from recsys.config_base import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is refused (PyYAML
    keeps the last value silently, so the first setting a person wrote would be ignored)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
        try:
            if key in seen:
                raise ConfigError(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one of them")
            seen[key] = line
        except TypeError:  # an unhashable key: PyYAML's own error follows
            continue
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> dict:
    """The sections a config file holds; ConfigError naming the file (and line) for anything else."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the YAML file itself (-c FOLDER/config.yaml)")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file (a pipe or a device); save the configuration "
                          "to a file and give its path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                          f"(line {line}, column {column}); save it as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def override_value(raw: str) -> Any:
    """The value of a `key=value` override, parsed as YAML (plain text where it is not YAML)."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _key(loc: tuple, is_field: Callable[[tuple], bool]) -> str:
    """The dotted key of an error's location, without pydantic's union-member parts
    (`literal['auto']`, `float`) that follow a field."""
    kept: list = []
    for part in loc:
        if isinstance(part, int) or is_field((*kept, part)):
            kept.append(part)
    return ".".join(str(p) for p in kept)


def describe(errors: list[dict], is_field: Callable[[tuple], bool],
             allowed_keys: Callable[[tuple], Optional[list[str]]]) -> list[str]:
    """One line per refused key: what is wrong and what is allowed. The alternatives of a union
    (`auto` or a number) are joined into one line."""
    lines: dict[str, list[str]] = {}
    inputs: dict[str, Any] = {}
    for error in errors:
        if error["type"] == "extra_forbidden":
            key = ".".join(str(p) for p in error["loc"])
            allowed = ", ".join(allowed_keys(error["loc"][:-1]) or ["?"])
            lines.setdefault(key, []).append(f"unknown key '{key}'; allowed here: {allowed}")
            inputs[key] = None
            continue
        key = _key(error["loc"], is_field)
        ctx = error.get("ctx") or {}
        message = error["msg"].removeprefix("Value error, ")
        if "expected" in ctx and str(ctx["expected"]) not in message:
            message += f" (allowed: {ctx['expected']})"
        lines.setdefault(key, []).append(message)
        inputs[key] = error.get("input")
    out = []
    for key, messages in lines.items():
        if inputs[key] is None and messages[0].startswith("unknown key"):
            out.append(messages[0])
            continue
        joined = messages[0] + "".join(" or " + m.removeprefix("Input should be ") for m in messages[1:])
        out.append(f"'{key}': {joined}; got {inputs[key]!r}")
    return out
