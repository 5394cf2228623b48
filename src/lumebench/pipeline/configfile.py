"""Typed configuration files: YAML / TOML / JSON read into dataclasses, every mistake one line.

    data, text = read_config_file(path)                        # syntax errors: file and line
    cfg = build(RunConfig, data, [], FieldLocator(path, text))  # types: file, line and field

``build`` checks every key against the dataclass's fields and its type annotations (nested
dataclasses, ``list[...]``, ``X | None``); :class:`FieldLocator` turns a key path such as
``["methods", 4, "overrides", "beta"]`` into ``file:line`` of a YAML (or JSON) document; TOML
parsers keep no positions, so its errors name the file and the field. Used by the run config
(:mod:`lumebench.pipeline.config`) and the sweep config (:mod:`lumebench.pipeline.sweep`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from lumebench.errors import LumeError

SUFFIXES = (".toml", ".json", ".yaml", ".yml")


class FieldLocator:
    """Finds the line of a field in a YAML file (TOML parsers keep no positions)."""

    def __init__(self, path: str | None, text: str | None, yaml_doc: bool):
        self.path, self.node = path, None
        if yaml_doc and text is not None:
            import yaml

            try:
                self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                self.node = None

    def line(self, keys: list) -> int | None:
        import yaml

        node, line = self.node, None
        for k in keys:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for kn, vn in node.value:
                    if kn.value == k:
                        nxt, line = vn, kn.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and k < len(node.value):
                nxt = node.value[k]
                line = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return line

    def error(self, message: str, keys: list) -> LumeError:
        name = "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k) for i, k in enumerate(keys))
        return LumeError(message, path=self.path, line=self.line(keys), field=name or None)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, keys: list, where: FieldLocator) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return coerce(value, opt, keys, where)
            except LumeError as e:
                errors.append(e)
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise where.error(f"expected {names}, got {type(value).__name__} {value!r}", keys)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, keys, where)
    if origin is list:
        if not isinstance(value, list):
            raise where.error(f"expected a list, got {type(value).__name__}", keys)
        (item,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item, keys + [i], where) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise where.error(f"expected a mapping, got {type(value).__name__}", keys)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise where.error(f"expected true or false, got {value!r}", keys)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(f"expected an integer, got {value!r}", keys)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(f"expected a number, got {value!r}", keys)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            hint = (" (YAML reads unquoted yes/no/on/off/true/false as booleans: put the text in quotes)"
                    if isinstance(value, bool) else "")
            raise where.error(f"expected a string, got {value!r}{hint}", keys)
        return value
    return value


def build(cls, data: Any, keys: list, where: FieldLocator):
    if not isinstance(data, dict):
        raise where.error(f"expected a mapping, got {type(data).__name__}", keys)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in known:
            raise where.error(f"unknown key; known keys: {', '.join(sorted(known))}", keys + [k])
        kwargs[k] = coerce(v, hints[k], keys + [k], where)
    return cls(**kwargs)


def read_config_file(path: str | Path) -> tuple[dict, str]:
    """The mapping a config file holds and its text; a syntax error names the file and line."""
    from lumebench.io import read_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LumeError("a config is a .yaml, .yml, .toml or .json file", path=str(path))
    if not path.exists():
        raise LumeError("config file not found", path=str(path))
    text = read_text(path)
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)  # TOML itself refuses duplicate keys
        elif suffix == ".json":
            data = json.loads(text, object_pairs_hook=_no_duplicate_pairs)
        else:
            data = load_yaml(text)
    except RecursionError:  # nested deeper than the parser follows: bad input, one line
        from lumebench.io import too_deep

        raise too_deep(path, text, depth_line=_yaml_depth(text) if suffix in (".yaml", ".yml") else None) from None
    except Exception as e:  # yaml/toml/json syntax errors
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        if line is None and isinstance(e, json.JSONDecodeError):
            line = e.lineno - 1
        msg = " ".join(str(getattr(e, "problem", None) or e).split())
        raise LumeError(f"cannot parse: {msg}", path=str(path), line=None if line is None else line + 1) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LumeError(f"a config is a mapping of settings, got a {type(data).__name__}", path=str(path))
    return data, text


def locator(path: str | Path | None, text: str | None) -> "FieldLocator":
    """The locator of a config file's fields (lines are known for YAML only)."""
    yaml_doc = path is not None and not str(path).endswith(".toml")  # JSON is YAML: it has lines too
    return FieldLocator(None if path is None else str(path), text, yaml_doc)


def merged(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _no_duplicate_pairs(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r} (JSON keeps only the last one silently)")
        out[k] = v
    return out


def _yaml_loader():
    """PyYAML's safe loader, made to refuse what it would accept silently but a person did not mean:
    a key given twice (PyYAML keeps the last), and to read ``1e-4`` as the number it looks like
    (YAML 1.1 wants ``1.0e-4`` and would give the text "1e-4")."""
    import re as _re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1}; YAML would keep "
                    "only the last one silently)", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader


def _yaml_depth(text: str) -> tuple[int, int]:
    """``(depth, line)``: how deep a YAML document nests and the line where it gets there. Flow style
    (``[[[...]]]``) is counted by brackets (PyYAML's scanner slows down with every open flow level);
    block style from PyYAML's event stream (an iterative parser: no recursion to overflow), up to
    twice the recursion limit (the depth reported is then a lower bound: deeper than can be read)."""
    import sys

    import yaml

    from lumebench.io import deepest_line

    flow = deepest_line(text)
    if flow[0] >= 100:
        return flow
    depth = deepest = 0
    at, stop = 1, 2 * sys.getrecursionlimit()
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > deepest:
                    deepest, at = depth, event.start_mark.line + 1
                if depth >= stop:
                    break
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass
    return deepest, at


def load_yaml(text: str):
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


