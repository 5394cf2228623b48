"""Which weights an unlearning method trains: all, a layer range, a name pattern, or a LoRA adapter.

- ``layers="0-5"``: only parameters of decoder layers 0..5 (inclusive; names ``*.layers.<i>.*``).
  SHA256 (SemEval 1B, 2nd) trained layers 0-5; AILS-NTUA (1st) the last 8.
- ``pattern="mlp.down_proj"``: only parameters whose name contains the pattern (a regular
  expression, searched). RMU updates ``mlp.down_proj`` of three layers.
- both: the intersection.
- ``lora=True``: a peft LoRA adapter on ``lora_targets`` (restricted to ``layers`` if given); every
  base weight is frozen and the reference model is the base with the adapter disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lumebench.errors import LumeError

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class ParamSelection:
    layers: str | None = None    # "A-B" (inclusive) or "A" or "A,B,C"
    pattern: str | None = None   # regex searched in parameter names
    lora: bool = False
    # LoRA r/alpha: 16/64 is AILS-NTUA's (SemEval 1st) LoRA option; alpha/r = 4 with lr 1e-4.
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    # all attention and MLP projections (Llama / OLMo names)
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"])

    def describe(self) -> str:
        parts = ["LoRA r=%d alpha=%d" % (self.lora_r, self.lora_alpha)] if self.lora else []
        if self.layers:
            parts.append(f"layers {self.layers}")
        if self.pattern:
            parts.append(f"names matching {self.pattern!r}")
        return ", ".join(parts) or "all weights"


def parse_layers(spec: str) -> list[int]:
    """``"0-5"`` -> [0..5]; ``"3"`` -> [3]; ``"1,4-5"`` -> [1, 4, 5]."""
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise LumeError(f"--layers {spec!r}: expected a layer index range such as 0-5 or 1,3,5-7") from None
    return sorted(set(out))


def layer_of(name: str) -> int | None:
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def num_layers(model) -> int:
    idx = [layer_of(n) for n, _ in model.named_parameters()]
    return max((i for i in idx if i is not None), default=-1) + 1


def apply_selection(model, sel: ParamSelection):
    """Freeze everything outside the selection (or wrap in a LoRA adapter).

    Returns ``(model, names)``: the model to train (a ``PeftModel`` under LoRA) and the names of its
    trainable parameters. Raises a one-line error when the selection matches nothing.
    """
    layers = parse_layers(sel.layers) if sel.layers else None
    if layers is not None:
        n = num_layers(model)
        bad = [i for i in layers if i >= n]
        if bad:
            raise LumeError(f"--layers {sel.layers}: the model has layers 0-{n - 1}")
    if sel.lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=sel.lora_r, lora_alpha=sel.lora_alpha, lora_dropout=sel.lora_dropout,
                         target_modules=list(sel.lora_targets), layers_to_transform=layers,
                         bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
        if sel.pattern:
            rx = re.compile(sel.pattern)
            for name, p in model.named_parameters():
                if p.requires_grad and not rx.search(name):
                    p.requires_grad_(False)
    else:
        rx = re.compile(sel.pattern) if sel.pattern else None
        for name, p in model.named_parameters():
            keep = (layers is None or layer_of(name) in layers) and (rx is None or rx.search(name))
            p.requires_grad_(bool(keep))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise LumeError(f"no trainable parameters match the selection ({sel.describe()})")
    return model, names
