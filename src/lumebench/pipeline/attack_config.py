"""The settings of a run config's ``attacks:`` section, typed by each attack's own config and checked
at load (one line naming the field); :mod:`lumebench.pipeline.attack_stage` runs them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lumebench.errors import LumeError


def _configs():
    from lumebench.attacks.quantize import QuantizeConfig
    from lumebench.attacks.relearn import RelearnConfig

    @dataclasses.dataclass
    class ParaphraseSettings:
        """file: a probe file (official data); None = the generated probes of the benchmark's facts."""
        file: str | None = None

    @dataclasses.dataclass
    class LensSettings:
        """split: whose QA rows (forget)."""
        split: str = "forget"

    return {"relearn": RelearnConfig, "quantize": QuantizeConfig, "paraphrase": ParaphraseSettings,
            "logit_lens": LensSettings}


def typed(attacks, where=None) -> dict:
    """The configured attacks as their config objects (``{name: config}``), checked; ``where``: a
    :class:`~lumebench.pipeline.configfile.FieldLocator` for one-line errors naming the field."""
    from lumebench.pipeline.configfile import FieldLocator, build

    where = where or FieldLocator(None, None, False)
    out = {}
    for name, cls in _configs().items():
        settings = getattr(attacks, name)
        if settings is None:
            continue
        cfg = build(cls, settings, ["attacks", name], where)
        try:
            if hasattr(cfg, "check"):
                cfg.check()
            if name == "logit_lens" and cfg.split not in ("forget", "retain"):
                raise LumeError("expected forget or retain", field="split")
            if name == "paraphrase" and cfg.file is not None and not Path(cfg.file).is_file():
                raise LumeError(f"file not found: {cfg.file}", field="file")
        except LumeError as e:
            raise where.error(e.message, ["attacks", name] + ([e.field] if e.field else [])) from None
        out[name] = cfg
    if attacks.max_new_tokens is not None and (isinstance(attacks.max_new_tokens, bool) or attacks.max_new_tokens < 1):
        raise where.error("must be a whole number >= 1", ["attacks", "max_new_tokens"])
    if not out:
        raise where.error("no attack configured (give relearn, quantize, paraphrase or logit_lens a mapping, "
                          "or leave the section out)", ["attacks"])
    return out
