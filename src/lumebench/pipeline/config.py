"""The ``lume run`` configuration: a YAML or TOML file read into documented dataclasses.

The one default is ``default.yaml`` beside this module (shipped in the package; ``configs/default.yaml``
is a link to it): a config file is laid over it (mappings merge key by key, lists replace), so a file
only states what differs. Everything is checked when the file loads, before any work: unknown keys and
wrong types, and what needs the registries (method names, every method override against the method's
``Hparams`` and the trainer settings, fine-tuning settings, the target model). A mistake is one line
naming the file, its line (YAML/JSON) and the field::

    error: configs/x.yaml:12: field 'methods[4].overrides.beta': expected a number, got 'x'

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
import re
from dataclasses import dataclass, field
from pathlib import Path

from lumebench.errors import LumeError
from lumebench.pipeline.configfile import FieldLocator, build, locator, merged, read_config_file
from lumebench.pipeline.eval_settings import EvalSettings, check as check_eval

DEFAULT_FILE = Path(__file__).with_name("default.yaml")


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

    source: str
    docs_per_task: int
    seed: int
    mia: str | None


@dataclass
class TargetConfig:
    """The model that has memorised the benchmark (what unlearning starts from).

    model: a registered model name (``tiny``, ``smollm2-135m``, ``olmo-1b``, ``olmo-7b``), a local
        HF directory, a ``.gguf`` file or a hub id.
    memorise: fine-tune ``model`` on forget + retain until it memorises them (cached by content);
        false for a model that already is a target (e.g. the official OLMo targets).
    finetune: fine-tuning hyperparameters passed to ``build_target`` (fields of its config;
        unspecified ones keep its defaults).
    seeds: several target builds (fine-tuning seeds: the model's initialisation, its batch order,
        the tiny tokenizer and held-out text): every method x unlearning seed runs on each, in
        ``<name>/target<k>/`` (a run folder each), and the run's leaderboard is over all of them, so
        its spread covers the target build as well as the unlearning seed. None = one target
        (``finetune``'s seed, default 0) in ``<name>/`` itself.
    """

    model: str
    memorise: bool
    finetune: dict
    seeds: list[int] | None = None


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

    name: str
    label: str | None = None
    overrides: dict = field(default_factory=dict)
    lora: bool = False

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class AttacksConfig:
    """Robustness attacks (:mod:`lumebench.attacks`, docs/attacks.md) run on every method row and seed
    after the methods, into ``<run>/attacks/<label>/seed<k>/<attack>/``; the leaderboard gets their
    columns, the report a plot and a summary. Each attack is a mapping of its settings (``{}``: its
    defaults) or null (not run).

    relearn: :class:`lumebench.attacks.relearn.RelearnConfig` (steps, modes, lr, batch_size, lora_r,
        train_fraction, seed, control, retrain_control); the controls are shared by every row.
    quantize: :class:`lumebench.attacks.quantize.QuantizeConfig` (schemes, backend, mia).
    paraphrase: ``file``: a probe file for official data (default: the generated probes of the facts).
    logit_lens: ``split`` (forget).
    max_new_tokens: generation budget of the attacks' evaluations (None: ``eval.max_new_tokens``).
    """

    relearn: dict | None = None
    quantize: dict | None = None
    paraphrase: dict | None = None
    logit_lens: dict | None = None
    max_new_tokens: int | None = None


@dataclass
class ClusterConfig:
    """Where the method runs (and a sweep's trials) run: ``docs/cluster.md``.

    backend: ``local`` (this machine's process pool: the default, no Ray needed) or ``ray`` (every
        run a Ray task, a sweep's trials Ray Tune trials; ``pip install 'lumebench[ray]'``).
    address: ray only: the cluster to join (``HOST:PORT`` as ``ray start --head`` prints it, or
        ``auto``); None starts a Ray instance on this machine. Multi-node needs a shared filesystem:
        every node must see the run folder at the same path.
    gpus: GPUs each run asks Ray for (0: CPU only; a fraction lets runs share a card).
    memory_gb: memory Ray reserves for each run (None: estimated from the target's weights).
    max_retries: times Ray runs a task again after its worker process or node died; the retry
        resumes from the run's last checkpoint.
    """

    backend: str = "local"
    address: str | None = None
    gpus: float = 0.0
    memory_gb: float | None = None
    max_retries: int = 3


def cluster_dict(value):
    """The ``cluster`` setting as a mapping: ``local``, ``ray`` and ``ray:ADDRESS`` are short for
    ``{backend: ..., address: ...}`` (a mapping, or anything else, is returned as it is)."""
    if not isinstance(value, str):
        return value
    backend, _, address = value.partition(":")
    return {"backend": backend, "address": address or None}


def check_cluster(c: ClusterConfig, where: FieldLocator, keys: list) -> None:
    if c.backend not in ("local", "ray"):
        raise where.error("expected 'local' or 'ray' (or 'ray:ADDRESS')", keys + ["backend"])
    if c.backend == "local" and c.address:
        raise where.error("an address needs backend 'ray' (ray:ADDRESS)", keys + ["address"])
    if c.gpus < 0:
        raise where.error("must be >= 0", keys + ["gpus"])
    if c.memory_gb is not None and c.memory_gb <= 0:
        raise where.error("must be > 0 (or null: estimated)", keys + ["memory_gb"])
    if c.max_retries < 0:
        raise where.error("must be >= 0", keys + ["max_retries"])


@dataclass
class RunConfig:
    """A whole benchmark run: data -> target -> every method x seed -> evaluations -> report.

    name: output folder ``<runs_dir>/<name>/``.
    methods: the methods to run, in leaderboard order.
    seeds: unlearning seeds; every method runs once per seed from the same target, and the
        leaderboard shows mean ± std over them.
    threads: torch CPU threads of each process (None = torch's default: every core).
    workers: method runs at once, each in its own process of ``threads`` threads (None = the CPU
        cores divided by ``threads``, or 1 when ``threads`` is torch's default). Results do not
        depend on it (nor on ``threads``): a resumed run may change both.
    attacks: robustness attacks on every method row (:class:`AttacksConfig`); None = none.
    cluster: where the method runs run (:class:`ClusterConfig`; ``ray:ADDRESS`` is short for
        ``{backend: ray, address: ADDRESS}``); results do not depend on it either.
    """

    name: str
    data: DataConfig
    target: TargetConfig
    methods: list[MethodConfig]
    eval: EvalSettings  # (lumebench.pipeline.eval_settings: one dataclass, carried whole to every run)
    seeds: list[int]
    threads: int | None
    workers: int | None = None
    attacks: AttacksConfig | None = None
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval"] = self.eval.to_dict()  # (a setting added since is recorded only when it is set)
        if d["attacks"] is None:  # a run without attacks records the config it always did
            del d["attacks"]
        return d


# ------------------------------------------------------------------------------------- parsing

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


def check_eval_section(ev: EvalSettings, where: FieldLocator) -> EvalSettings:
    """The ``eval`` section checked against the ranges its fields declare (one line naming file, line,
    field), with its values converted (``every: "5"`` becomes 5)."""
    try:
        return dataclasses.replace(ev, **check_eval(dataclasses.asdict(ev)))
    except LumeError as err:
        raise where.error(err.message, ["eval"] + ([err.field] if err.field else [])) from None


def validate(cfg: RunConfig, where: FieldLocator) -> RunConfig:
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
    ts = cfg.target.seeds
    if ts is not None and (not ts or len(set(ts)) != len(ts)):
        raise where.error("target seeds must be a non-empty list of distinct integers (or null)", ["target", "seeds"])
    if ts is not None and "seed" in cfg.target.finetune:
        raise where.error("give the target's seed either here or as target.seeds, not both", ["target", "finetune", "seed"])
    check_cluster(cfg.cluster, where, ["cluster"])
    if cfg.data.source == "generated" and cfg.data.docs_per_task < 1:
        raise where.error("must be >= 1", ["data", "docs_per_task"])
    from lumebench import checks

    cfg.eval = check_eval_section(cfg.eval, where)
    for keys, value, check in (
            (["threads"], cfg.threads, checks.positive_int),
            (["workers"], cfg.workers, checks.positive_int),
            (["data", "seed"], cfg.data.seed, checks.seed),
            *((["seeds", i], s, checks.seed) for i, s in enumerate(cfg.seeds)),
            *((["target", "seeds", i], s, checks.seed) for i, s in enumerate(cfg.target.seeds or []))):
        if value is not None:
            try:
                check(value, keys[-1])
            except LumeError as err:
                raise where.error(err.message, keys) from None
    return cfg


#: the evaluation settings a method row may override: when it is evaluated, not on what or how (every
#: run reuses the one evaluation before unlearning, made with the run's eval section)
ROW_EVAL = {"every", "mmlu_at"}


def check_registered(cfg: RunConfig, where: FieldLocator) -> None:
    """What needs the registries to check, at load: a method name that is not registered, a method
    override that is unknown, of the wrong type or out of range (typed by the method's ``Hparams``
    and the trainer settings), a fine-tuning setting that is, and a target model that does not
    resolve."""
    from lumebench.pipeline.target import check_settings
    from lumebench.pipeline.unlearn_config import resolve_config, split_overrides
    from lumebench.registry import METHODS

    for i, m in enumerate(cfg.methods):
        if m.name not in METHODS:
            raise where.error(f"unknown method {m.name!r}; known: {', '.join(METHODS.names())}",
                              ["methods", i, "name"])
        try:
            split = split_overrides(m.name, {**m.overrides, **({"lora": True} if m.lora else {})})
            resolve_config(m.name, split)
        except LumeError as e:
            keys = ["methods", i, "overrides"] + ([e.field] if e.field else [])
            raise where.error(e.message, keys) from None
        for name in set(split.eval) - ROW_EVAL:
            raise where.error("an evaluation setting of what or how to evaluate goes in the run's eval section, "
                              "the same for every method (each starts from the one evaluation before unlearning); "
                              "a method row may set only eval.every and eval.mmlu_at", ["methods", i, "overrides", name])
    try:
        check_settings(cfg.target.finetune)
    except LumeError as e:
        raise where.error(e.message, ["target", "finetune"] + ([e.field] if e.field else [])) from None
    try:
        from lumebench.pipeline.model_checks import model as model_spec

        model_spec(cfg.target.model, "model")
    except LumeError as e:
        raise where.error(e.message, ["target", "model"]) from None
    if cfg.attacks is not None:
        # the attacks' settings are typed by their own configs (imported only when a config has an
        # attacks section)
        from lumebench.pipeline.attack_config import typed

        typed(cfg.attacks, where)


def default_dict() -> dict:
    """The packaged ``default.yaml`` as a mapping (the one default of every field)."""
    data, _ = read_config_file(DEFAULT_FILE)
    return data


def from_dict(data: dict, *, path: str | None = None, text: str | None = None) -> RunConfig:
    """``data`` laid over the default, typed and checked (``path``/``text``: where errors point)."""
    where = locator(path, text)
    if "cluster" in data:
        data = {**data, "cluster": cluster_dict(data["cluster"])}
    cfg = validate(build(RunConfig, merged(default_dict(), data), [], where), where)
    check_registered(cfg, where)
    return cfg


def load_config(path: str | Path | None) -> RunConfig:
    """Read ``path`` (``.yaml``/``.yml``/``.toml``/``.json``); None gives the packaged default."""
    if path is None:
        path = DEFAULT_FILE
    data, text = read_config_file(path)
    return from_dict(data, path=str(path), text=text)


def default_config() -> RunConfig:
    return load_config(None)


def to_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
