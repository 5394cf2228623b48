"""The method API: an unlearning method is a loss over one (forget batch, retain batch) pair.

A method is a small class registered by name in :data:`lumebench.registry.METHODS`::

    @dataclass
    class NPOHparams:
        beta: float = 0.1   # inverse temperature of NPO (Zhang et al. 2024, TOFU setting)

    @METHODS.register("npo", help="negative preference optimisation")
    class NPO(Method):
        Hparams = NPOHparams
        def setup(self, ctx): ...                       # optional: reference quantities
        def loss(self, ctx, forget, retain): ...        # -> (loss tensor, {name: float})

Adding a method = one file in this package with its hyperparameter dataclass (the literature values
and where they come from in the field comments) + one import line in ``methods/catalog.py``
(``docs/contributing.md`` has a complete, tested example).

A *batch* is a dict of tensors built by :func:`collate`: ``input_ids``, ``attention_mask``,
``labels`` (``-100`` everywhere except the target tokens = the row's ``output``) and ``index``
(the example's position in the forget / retain list, used to look up cached reference values).

Shared helpers (all take the model being trained or the reference):
- :func:`sequence_nll` — per-sequence **summed** NLL over target tokens (NPO's ℓ) + token counts;
- :func:`mean_nll` — NLL averaged over all target tokens of the batch (the usual LM loss, NLL̄);
- :func:`kl_to_reference` — KL(p_ref ‖ p_θ) averaged over the target tokens of a batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F

from lumebench.checks import setting
from lumebench.distributed import global_mean, unwrap
from lumebench.eval.batching import eval_mode
from lumebench.methods.reference_cache import cached_reference_nll

IGNORE = -100


# ----------------------------------------------------------------------------- examples & batches

@dataclass(frozen=True)
class Example:
    """One tokenised row: ``ids = prompt + target``; the loss is over the last ``n_target`` ids."""

    ids: tuple[int, ...]
    n_target: int
    index: int  # position in its split's example list (key of cached reference values)
    n_prompt: int | None = None  # tokens of the prompt (``tokenizer(input)``), whatever ``loss_on`` says


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels = -100 outside the target tokens."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        mask[i, :n] = 1
        labels[i, n - e.n_target:n] = ids[i, n - e.n_target:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "index": torch.tensor([e.index for e in examples], dtype=torch.long)}


# ----------------------------------------------------------------------------- shared loss helpers

def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 use_cache=False).logits


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (``[B, T-1]``, 0 where ignored) and the mask of target positions."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels.clamp(min=0), reduction="none")
    return nll * mask, mask


def sequence_nll(model, batch: dict[str, torch.Tensor], logits: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ℓ [B], n_target [B])``: the summed NLL of each sequence's target tokens and their count."""
    if logits is None:
        logits = forward_logits(model, batch)
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum(1), mask.sum(1)


def mean_nll(model, batch: dict[str, torch.Tensor], logits: torch.Tensor | None = None) -> torch.Tensor:
    """NLL averaged over every target token of the (global) batch (what ``model(labels=...).loss``
    gives; under data parallelism see :func:`lumebench.distributed.global_mean`)."""
    if logits is None:
        logits = forward_logits(model, batch)
    nll, mask = token_nll(logits, batch["labels"])
    return global_mean(nll, mask)


def sequence_weights(n_target: torch.Tensor) -> torch.Tensor:
    """1 for a sequence with target tokens, 0 for the placeholder row of an empty share."""
    return (n_target > 0).to(torch.float32)


def kl_all_positions(logits: torch.Tensor, ref_logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) summed over the vocabulary, averaged over *every* real position of the batch
    (prompt and target alike: the next-token distribution after each non-padding token), as TOFU's
    ``KL`` and ZJUKLAB compute it (``log_softmax(...).view(-1, V)``, ``kl_div(..., "batchmean")``)."""
    mask = attention_mask.bool()
    logp = F.log_softmax(logits.float(), dim=-1)[mask]
    logp_ref = F.log_softmax(ref_logits.float(), dim=-1)[mask]
    kl = F.kl_div(logp, logp_ref, log_target=True, reduction="none").sum(-1)
    return global_mean(kl) + logits.sum() * 0.0


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) = Σ_v p_ref (log p_ref − log p_θ), averaged over the target positions."""
    mask = labels[:, 1:] != IGNORE
    logp = F.log_softmax(logits[:, :-1, :].float(), dim=-1)[mask]
    logp_ref = F.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)[mask]
    kl = F.kl_div(logp, logp_ref, log_target=True, reduction="none").sum(-1)
    return global_mean(kl) + logits.sum() * 0.0


# ----------------------------------------------------------------------------- context

@dataclass
class UnlearnContext:
    """What a method sees: the model being trained, the tokenised data, and the reference.

    The *reference* is the model before unlearning. With a LoRA adapter it is the same module with
    the adapter disabled (``model.disable_adapter()``) — no second copy. Without LoRA it is a frozen
    deep copy made by :meth:`ensure_reference` (costs one more model's weights in memory: 4 bytes a
    parameter in fp32, e.g. 0.5 GB for SmolLM2-135M, 28 GB for OLMo-7B); only methods that need
    reference *outputs during training* (the KL terms) ask for it. NPO's reference only enters
    through per-example constants, cached once by :meth:`cached_reference_nll`.
    """

    model: Any
    forget: list[Example]
    retain: list[Example]
    pad_id: int
    lora: bool = False
    run_dir: Path | None = None
    tokenizer: Any = None
    batch_size: int = 8
    cache: dict[str, Any] = field(default_factory=dict)
    target_digest: str | None = None  # weights digest of the target (keys the reference-NLL cache)
    _ref_copy: Any = None

    def ensure_reference(self) -> None:
        """Make the reference available during training (a frozen copy unless LoRA)."""
        if self.lora or self._ref_copy is not None:
            return
        ref = copy.deepcopy(self.model)
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        self._ref_copy = ref

    @contextlib.contextmanager
    def reference(self) -> Iterator[Any]:
        """``with ctx.reference() as ref:`` — a model computing the pre-unlearning outputs (no grad)."""
        with torch.no_grad():
            if self.lora:
                peft_model = unwrap(self.model)  # DDP's wrapper has no disable_adapter(); FSDP2's module does
                with eval_mode(peft_model), peft_model.disable_adapter():
                    yield peft_model
            else:
                if self._ref_copy is None:
                    raise RuntimeError("the method needs the reference model: call ctx.ensure_reference() in setup()")
                device = next(self.model.parameters()).device
                if next(self._ref_copy.parameters()).device != device:  # the trainer moved the model
                    self._ref_copy.to(device)
                yield self._ref_copy

    def reference_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.reference() as ref:
            return forward_logits(ref, batch)

    def cached_reference_nll(self, split: str = "forget") -> torch.Tensor:
        """ℓ_ref for every example of ``split`` (summed target NLL under the reference), computed once.

        With a ``run_dir`` it is a cached step in ``<run_dir>/reference_nll_<split>/`` keyed by the
        tokenised examples and the target's weights digest (:mod:`lumebench.methods.reference_cache`):
        a resumed run (the model on disk has already moved by then) reads it back. Under several
        processes each computes its share of the examples and the values are gathered.
        """
        key = f"ref_nll_{split}"
        if key not in self.cache:
            examples = self.forget if split == "forget" else self.retain
            if self.run_dir is None:
                self.cache[key] = compute_reference_nll(self, examples)
            else:
                self.cache[key] = cached_reference_nll(self.run_dir, split, examples, self.target_digest,
                                                       lambda: compute_reference_nll(self, examples))
        return self.cache[key]


def compute_reference_nll(ctx: UnlearnContext, examples: list[Example]) -> torch.Tensor:
    """ℓ_ref[i] for each example, in batches, under ``ctx.reference()`` (or the model itself if the
    reference copy does not exist yet: before training the model *is* the reference)."""
    from lumebench.distributed import map_sharded

    device = next(ctx.model.parameters()).device

    def nll_of(part: list[Example]) -> list[float]:
        values: list[float] = []
        for start in range(0, len(part), ctx.batch_size):
            chunk = part[start:start + ctx.batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, ctx.pad_id).items()}
            if ctx.lora or ctx._ref_copy is not None:
                with ctx.reference() as ref:
                    nll, _ = sequence_nll(ref, batch)
            else:
                with eval_mode(ctx.model), torch.no_grad():
                    nll, _ = sequence_nll(ctx.model, batch)
            values += nll.float().cpu().tolist()
        return values

    out = torch.zeros(len(examples), dtype=torch.float32)
    out[[e.index for e in examples]] = torch.tensor(map_sharded(nll_of, examples), dtype=torch.float32)
    return out


# ----------------------------------------------------------------------------- method base class

@dataclass
class NoHparams:
    pass


class Method:
    """Base class: subclasses set ``Hparams`` (a dataclass of documented defaults) and ``loss``."""

    Hparams: ClassVar[type] = NoHparams
    #: where the method comes from, one line (repository + file and/or paper); ``lume methods`` shows it
    source: ClassVar[str] = ""
    #: True if the loss needs the reference model's outputs during training (KL terms)
    needs_reference_model: ClassVar[bool] = False
    #: trainer settings of the method's published recipe, applied with the "literature" preset
    trainer_defaults: ClassVar[dict] = {}
    #: settings that *are* the method (LoRA, its rank, ``loss_on``, ...), applied under every preset
    #: (the user's overrides still win); e.g. Atyaephyra is LoRA rank 5 by definition
    recipe: ClassVar[dict] = {}
    #: per-preset settings (trainer settings and/or hyperparameters) where the literature numbers are
    #: for 7B models and do nothing on the tiny target, e.g. ``{"tiny": {"lr": 3e-2, "steering_coef": 20}}``.
    #: ``"original"``: the source as published (every number cited where it is set); ``"lumebench"``:
    #: lumebench's own variant where it differs from the source (see each method's docstring)
    preset_defaults: ClassVar[dict[str, dict]] = {}

    def default_selection(self, n_layers: int) -> dict:
        """Which weights to train when the user chose none (``{"layers": .., "params": ..}``; {} = all)."""
        return {}

    def __init__(self, hparams: Any = None):
        self.hp = hparams if hparams is not None else self.Hparams()

    def setup(self, ctx: UnlearnContext) -> None:
        """Compute and cache quantities that do not change during training (default: reference copy
        for methods that need it)."""
        if self.needs_reference_model:
            ctx.ensure_reference()

    def loss(self, ctx: UnlearnContext, forget: dict, retain: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # Optional hooks (the defaults are what every plain loss-based method wants).

    def schedule(self, forget: list[Example], retain: list[Example], *, batch_size: int, retain_batch_size: int,
                 pad_id: int, seed: int, epochs: int):
        """A custom order of (forget, retain) micro-batches, or None for the trainer's paired epochs.

        Returns an object like :class:`lumebench.methods.data.PairedBatches` minus ``chunk`` and
        ``__call__``: ``.per_epoch`` (micro-batches that count as one epoch for evaluation),
        ``.total`` and ``.batch(k) -> {"forget": ..., "retain": ...}`` for global micro-batch ``k``.
        """
        return None

    @contextlib.contextmanager
    def evaluated(self, ctx: UnlearnContext) -> Iterator[Any]:
        """The model to evaluate / save, as a context (task vectors evaluate θ0 − α(θ − θ0))."""
        yield ctx.model

    def finalize(self, ctx: UnlearnContext) -> None:
        """Turn the trained model into the unlearned one in place, before it is saved (default: nothing)."""


def later(default: Any, check: Any = None) -> Any:
    """A hyperparameter added after runs were recorded with its method: at its default it is left out
    of the run's key (:func:`hparams_key`), so those runs stay valid (their numbers do not change).
    ``check``: its range, as :func:`lumebench.checks.setting`."""
    return setting(default, check, later=True)


def hparams_key(hp: Any) -> dict[str, Any]:
    """``asdict(hp)`` without the :func:`later` fields that are at their default."""
    out = dataclasses.asdict(hp)
    for f in dataclasses.fields(hp):
        if f.metadata.get("later") and out[f.name] == f.default:
            del out[f.name]
    return out


def collate_share(examples: list[Example], pad_id: int, fallback: Example) -> dict[str, torch.Tensor]:
    """:func:`collate`, or for an empty share (a batch drawn from forget and retain together that
    holds none of one kind) one placeholder row of ``fallback`` with no target token."""
    if examples:
        return collate(examples, pad_id)
    batch = collate([fallback], pad_id)
    batch["labels"].fill_(IGNORE)
    return batch


def hparam_fields(cls: type) -> dict[str, Any]:
    """``{name: default}`` of a method's hyperparameter dataclass."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls.Hparams)}


#: TOFU's trainer as published (locuslab/tofu ``config/forget.yaml``, ``forget.py``, ``README.md``):
#: lr 1e-5 (forget.yaml l. 8); batch 4 x accumulation 4 on 2 GPUs (README.md l. 60) = 32 a step;
#: 5 epochs (l. 13); one epoch of warm-up (forget.py l. 92) then the Trainer's linear decay;
#: weight decay 0.01 (l. 18); ``paged_adamw_32bit`` (forget.py l. 100): AdamW (0.9, 0.999); the
#: Trainer's clipping at norm 1; full fine-tuning (LoRA r 0, forget.yaml l. 4)
TOFU_TRAINER = {"lr": 1e-5, "batch_size": 32, "grad_accum": 1, "epochs": 5, "warmup_ratio": 0.2,
                "lr_schedule": "linear", "weight_decay": 0.01, "adam_betas": [0.9, 0.999],
                "max_grad_norm": 1.0, "lora": False}

#: the NPO authors' TOFU trainer (licong-lin/negative-preference-optimization ``TOFU/config/
#: forget.yaml``, ``TOFU/forget.py``): lr 1e-5 (l. 8); batch 4 x accumulation 4 (l. 11-12) on 2 GPUs
#: (``2GPU_`` in save_dir, l. 29) = 32; 10 epochs (l. 13); weight decay 0.01 (l. 21); one epoch of
#: warm-up (l. 27; forget.py l. 127) then linear decay; ``paged_adamw_32bit`` (forget.py l. 135)
NPO_TRAINER = {"lr": 1e-5, "batch_size": 32, "grad_accum": 1, "epochs": 10, "warmup_ratio": 0.1,
               "lr_schedule": "linear", "weight_decay": 0.01, "adam_betas": [0.9, 0.999],
               "max_grad_norm": 1.0, "lora": False}


# ----------------------------------------------------------------------------- reusable loss terms

def forget_ascent(model, forget: dict) -> tuple[torch.Tensor, float]:
    """−NLL̄(forget): gradient *ascent* on the forget target tokens. Returns (loss, NLL̄ value)."""
    nll = mean_nll(model, forget)
    return -nll, float(nll.detach())


def retain_kl(ctx: UnlearnContext, retain: dict, on: str = "target") -> tuple[torch.Tensor, float]:
    """KL(p_ref ‖ p_θ) on the retain target tokens (``on="all"``: every real position)."""
    logits = forward_logits(ctx.model, retain)
    if on == "all":
        kl = kl_all_positions(logits, ctx.reference_logits(retain), retain["attention_mask"])
    else:
        kl = kl_to_reference(logits, ctx.reference_logits(retain), retain["labels"])
    return kl, float(kl.detach())
