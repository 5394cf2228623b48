"""The attacks of a run config's ``attacks:`` section, on every method row of ``lume run``.

After the methods, for every seed and method row whose unlearning finished, each configured attack
runs on the row's final model into ``<run>/attacks/<label>/seed<k>/<attack>/`` (a step each:
a rerun reuses it), and the quantisation, paraphrase and logit-lens attacks once on the target into
``<run>/attacks/target/`` (the reference the rows are read against). The relearning controls (the
target, and with ``retrain_control`` a target built without V) are shared by every row, in
``<run>/attacks/controls/``. Nothing is written into the method folders. The attacks themselves
(:mod:`lumebench.attacks`) sit below the pipeline; ``pipeline/run.py`` and ``pipeline/config.py``
import this stage only when a config has an ``attacks:`` section.
"""

from __future__ import annotations

from pathlib import Path

from lumebench.attacks.common import AttackEval
from lumebench.errors import LumeError
from lumebench.io import read_json
from lumebench.pipeline.attack_config import typed
from lumebench.pipeline.unlearn_config import unlearning_lr
from lumebench.progress import log

def _final_model(method_folder: Path) -> str | None:
    rec = method_folder / "unlearn.json"
    if not (method_folder / "done.json").is_file() or not rec.is_file():
        return None
    state = read_json(rec, expect=dict)
    final = state.get("final_model")
    return final if state.get("status") in ("finished", "diverged") and final and Path(final).is_dir() else None


def _retrain_target(cfg, bench, cache: Path, split: dict) -> str:
    """A target built like the run's, on the benchmark without V's documents (the learning control)."""
    from lumebench.pipeline.target import FinetuneConfig, build_target, check_settings

    if not cfg.target.memorise:
        raise LumeError("relearn.retrain_control needs a target the run builds (target.memorise: true)",
                        field="attacks.relearn.retrain_control")
    held_out = set(split["V"])
    keep = [d for d in bench.doc_ids("forget") if d not in held_out] + bench.doc_ids("retain")
    log.info("attacks: building the retrain control (the target without V's %d documents)", len(split["V"]))
    return str(build_target(cfg.target.model, bench.subset(keep),
                            FinetuneConfig.for_base(cfg.target.model, check_settings(cfg.target.finetune)),
                            cache / "targets"))


def run_attacks(cfg, run_dir: Path, target: str, bench, cache: Path) -> dict:
    """Every configured attack on every finished method row (and the target); returns what ran."""
    from lumebench.pipeline.run_folder import method_dir

    attacks = typed(cfg.attacks)
    ev = AttackEval(max_new_tokens=cfg.attacks.max_new_tokens or cfg.eval.max_new_tokens, engine=cfg.eval.engine)
    root = run_dir / "attacks"
    probes = None
    if "paraphrase" in attacks:
        from lumebench.data.paraphrase import load_paraphrase

        probes = load_paraphrase(attacks["paraphrase"].file, bench) if attacks["paraphrase"].file else None
    retrain = None
    if "relearn" in attacks and attacks["relearn"].retrain_control:
        from lumebench.attacks.relearn import split_documents

        r = attacks["relearn"]
        retrain = _retrain_target(cfg, bench, cache, split_documents(bench, r.train_fraction, r.seed))
    done = {}
    log.info("attacks: %s on %d method row(s) x %d seed(s)", ", ".join(attacks), len(cfg.methods), len(cfg.seeds))
    _one(attacks, target, bench, root / "target", ev, probes, rows=False)
    for seed in cfg.seeds:
        for m in cfg.methods:
            model = _final_model(method_dir(run_dir, m.key, seed))
            if model is None:
                log.warning("attacks: %s seed %d has no finished model; skipped", m.key, seed)
                continue
            log.info("attacks: %s (seed %d)", m.key, seed)
            _one(attacks, model, bench, root / m.key / f"seed{seed}", ev, probes, target=target, retrain=retrain,
                 controls=root / "controls" / "relearn")
            done[f"{m.key}/seed{seed}"] = sorted(attacks)
    return done


def _one(attacks: dict, model: str, bench, out: Path, ev: AttackEval, probes, *, rows: bool = True,
         target: str | None = None, retrain: str | None = None, controls: Path | None = None) -> None:
    """The configured attacks on one model (the target: all but relearning)."""
    if "relearn" in attacks and rows:
        from lumebench.attacks.relearn import relearn

        relearn(model, target, bench, out / "relearn", attacks["relearn"], ev, retrain=retrain, controls_dir=controls,
                lr_of=unlearning_lr)
    if "quantize" in attacks:
        from lumebench.attacks.quantize import quantize

        quantize(model, bench, out / "quantize", attacks["quantize"], ev)
    if "paraphrase" in attacks:
        from lumebench.attacks.paraphrase import paraphrase

        paraphrase(model, bench, out / "paraphrase", probes, ev)
    if "logit_lens" in attacks:
        from lumebench.attacks.logit_lens import logit_lens

        logit_lens(model, bench, out / "logit_lens", split=attacks["logit_lens"].split)
