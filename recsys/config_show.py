"""The effective configuration as YAML (`graphrec config`): every key with the value a command
would run with, defaults included, and beside each value that is not the default, where it came
from (a line of the `-c` file, a `--set`, or a rule that derives it from other keys). The text is
a configuration file itself: `graphrec retrain -c` reads it back to the same settings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

from recsys.config import RunConfig, load_config


def _file_lines(path: Path) -> dict[str, int]:
    """Dotted key -> line of every key the YAML file names (sections included)."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            walk(value_node, key)

    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, "")
    return lines


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_leaves(v, key))
        else:
            out[key] = v
    return out


def _source(key: str, path: Optional[str], file_lines: dict[str, int], set_keys: list[str]) -> str:
    """Where a non-default value came from: the last --set that names it (or a section above it),
    else the file's line, else a rule on other keys."""
    covers = lambda given: key == given or key.startswith(given + ".")  # noqa: E731
    for given in reversed(set_keys):
        if covers(given):
            return f"--set {given}"
    named = [k for k in file_lines if covers(k)]
    if named:
        deepest = max(named, key=len)
        return f"{path} line {file_lines[deepest]}"
    return "derived from the keys above"


def effective_yaml(path: Optional[str], overrides: list[str]) -> str:
    """The configuration `-c path --set ...` gives, as commented YAML (ConfigError if invalid)."""
    cfg = load_config(path, overrides)
    defaults = _leaves(RunConfig().model_dump(mode="json"))
    file_lines = _file_lines(Path(path)) if path else {}
    set_keys = [item.split("=", 1)[0].strip() for item in overrides]
    out = ["# graphrec's effective configuration: every key, defaults included; a comment names the source of",
           "# each value that is not the default. `graphrec retrain -c FILE` reads this file as it is."]

    def emit(node: dict, depth: int, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            pad = "  " * depth
            if isinstance(v, dict) and v:
                out.append(f"{pad}{k}:")
                emit(v, depth + 1, key)
                continue
            line = f"{pad}{k}: {json.dumps(v)}"
            if key not in defaults or defaults[key] != v:
                line += f"  # {_source(key, path, file_lines, set_keys)}"
            out.append(line)

    emit(cfg.model_dump(mode="json"), 0, "")
    return "\n".join(out) + "\n"
