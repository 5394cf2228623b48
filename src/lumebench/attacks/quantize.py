"""Quantisation (``lume attack quantize``): load the unlearned model with weight-only 8-bit or 4-bit
weights and run the LUME metrics again.

Zhang et al. 2025 ("Catastrophic failure of LLM unlearning via quantization", ICLR 2025, arXiv
2410.16454; code zzwjames/FailureLLMUnlearning) found that an unlearned model loaded in 4 bits gives
back much of what it forgot (forget knowledge retained 21 % -> 83 %): unlearning with a small lr moves
each weight by less than a quantisation step, so rounding maps the unlearned weights back onto the
target's. Their loading is bitsandbytes' (``load_in_4bit`` / ``load_in_8bit``), which needs a GPU.

Schemes (``scheme``), applied to the weight of every ``nn.Linear`` except the output head (as
transformers' bitsandbytes loading keeps ``lm_head`` in full precision), as *weight-only* quantisation:
each weight is quantised and dequantised back (the values the quantised model computes with), the
activations and the matrix products stay in float32:

- ``int8``: symmetric per-output-channel round-to-nearest, scale = max |w| of the row / 127: the
  vector-wise absmax quantisation of LLM.int8 (Dettmers et al. 2022, arXiv 2208.07339, §3.1), without
  its fp16 outlier columns (torchao's ``Int8WeightOnlyConfig`` divides by 127.5 and uses -128: its
  values differ by at most one step);
- ``nf4``: 4-bit NormalFloat with one absmax scale per block of 64 consecutive weights (the
  row-major flattened tensor), each weight / absmax rounded to the nearest of the 16 NF4 values:
  the 4-bit data type of QLoRA (Dettmers et al. 2023, arXiv 2305.14314, §3 and Appendix E for the
  values) and bitsandbytes' default block size of 64; scales kept in float32 (no double
  quantisation).

Backends (``backend``): ``lumebench`` (the schemes above, written here: portable, no dependency,
bit-identical on every machine under the pinned numerics); ``torchao`` (when installed: int8 through
``quantize_(Int8WeightOnlyConfig())``, nf4 through ``to_nf4(block_size=64, scaler_block_size=256)``,
i.e. with QLoRA's double quantisation of the scales, dequantised the same way); ``bitsandbytes``
(when installed: on a CUDA GPU the model loaded by transformers with ``BitsAndBytesConfig``, as Zhang
et al.; on a CPU bitsandbytes' own ``quantize_4bit`` / ``int8_vectorwise_quant`` and their
dequantisation, measured equal to the ``lumebench`` schemes: NF4 bit for bit, int8 within float
rounding, 1.5e-8, with bitsandbytes 0.50.2). The result records the backend, its version and the
exact scheme.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from lumebench.attacks.common import AttackEval, delta, identity, load, step_key, write_result
from lumebench.data.records import Benchmark
from lumebench.errors import LumeError
from lumebench.step import Step
from lumebench.progress import log

SCHEMES = ("int8", "nf4")
BACKENDS = ("lumebench", "torchao", "bitsandbytes")
NF4_BLOCK = 64
# QLoRA Appendix E / bitsandbytes' NF4 code: the 16 quantiles of N(0, 1) normalised to [-1, 1], with
# an exact zero (Dettmers et al. 2023, arXiv 2305.14314)
NF4_VALUES = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
DESCRIBE = {
    "int8": "weight-only int8: symmetric per-output-channel round-to-nearest (scale = row absmax / 127)",
    "nf4": f"weight-only NF4 (QLoRA, arXiv 2305.14314): absmax blocks of {NF4_BLOCK}, nearest of 16 NF4 values",
}


@dataclass
class QuantizeConfig:
    """Settings of the quantisation attack.

    schemes: ``int8`` and/or ``nf4`` (the 8-bit and 4-bit of Zhang et al.).
    backend: ``lumebench`` (default: the schemes written here), ``torchao`` (installed separately:
        ``pip install torchao``) or ``bitsandbytes`` (a CUDA GPU).
    mia: also run the MIA (when the benchmark has its documents) before and after quantising.
    """

    schemes: list[str] = field(default_factory=lambda: ["int8", "nf4"])
    backend: str = "lumebench"
    mia: bool = True

    def check(self) -> "QuantizeConfig":
        if not self.schemes or any(s not in SCHEMES for s in self.schemes):
            raise LumeError(f"schemes: expected a non-empty list of {' / '.join(SCHEMES)}", field="schemes")
        if self.backend not in BACKENDS:
            raise LumeError(f"backend: expected one of {', '.join(BACKENDS)}", field="backend")
        return self


# ----------------------------------------------------------------------------------- the schemes

def int8_rtn(w):
    """Symmetric per-row int8, quantised and dequantised."""
    import torch

    w32 = w.detach().float()
    scale = w32.abs().amax(dim=-1, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.clamp(torch.round(w32 / scale), -127, 127) * scale).to(w.dtype)


def nf4_blockwise(w, block: int = NF4_BLOCK):
    """NF4 with one absmax per ``block`` weights of the flattened tensor, quantised and dequantised."""
    import torch

    flat = w.detach().float().reshape(-1)
    pad = (-flat.numel()) % block
    blocks = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    code = torch.tensor(NF4_VALUES, dtype=torch.float32)
    idx = (blocks / safe).unsqueeze(-1).sub(code).abs().argmin(dim=-1)
    deq = code[idx] * absmax
    return deq.reshape(-1)[:flat.numel()].reshape(w.shape).to(w.dtype)


def quant_step(w, scheme: str):
    """The largest gap between neighbouring representable values of each weight (its quantisation
    step): a change smaller than half of it can be rounded away."""
    import torch

    w32 = w.detach().float()
    if scheme == "int8":
        return (w32.abs().amax(dim=-1, keepdim=True) / 127.0).expand_as(w32)
    flat = w32.reshape(-1)
    pad = (-flat.numel()) % NF4_BLOCK
    absmax = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, NF4_BLOCK).abs().amax(dim=1, keepdim=True)
    gap = max(b - a for a, b in zip(NF4_VALUES, NF4_VALUES[1:]))
    return (absmax * gap).expand(-1, NF4_BLOCK).reshape(-1)[:flat.numel()].reshape(w32.shape)


def _torchao_fn(scheme: str):
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_, to_nf4
    except ImportError:
        raise LumeError("backend torchao: torchao is not installed (pip install torchao), or use "
                        "backend lumebench", field="backend") from None
    import torch

    def int8(w):
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data.copy_(w.detach().float())
        holder = torch.nn.Sequential(lin)
        quantize_(holder, Int8WeightOnlyConfig())
        return holder[0].weight.dequantize().to(w.dtype)

    def nf4(w):
        # QLoRA's double quantisation groups 256 block scales; a small tensor takes the largest power
        # of two of them that divides its number of blocks (torchao requires it)
        n_blocks = w.numel() // NF4_BLOCK
        group = next(g for g in (256, 128, 64, 32, 16, 8, 4, 2, 1) if n_blocks % g == 0)
        return to_nf4(w.detach().float().contiguous(), NF4_BLOCK, group).get_original_weight().to(w.dtype)

    return {"int8": int8, "nf4": nf4}[scheme]


def _bnb_fn(scheme: str):
    """bitsandbytes' own weight quantisation functions (its CPU backend; the ones its Linear4bit /
    Linear8bitLt apply to a weight): NF4 blocks of 64, and int8 vector-wise absmax."""
    try:
        import bitsandbytes.functional as F
    except ImportError:
        raise LumeError("backend bitsandbytes: bitsandbytes is not installed (pip install bitsandbytes), or use "
                        "backend lumebench", field="backend") from None

    def nf4(w):
        q, state = F.quantize_4bit(w.detach().float().contiguous(), blocksize=NF4_BLOCK, quant_type="nf4")
        return F.dequantize_4bit(q, state).to(w.dtype)

    def int8(w):
        cb, scb, _ = F.int8_vectorwise_quant(w.detach().float().contiguous())
        return (cb.float() * scb.unsqueeze(1) / 127.0).to(w.dtype)

    return {"int8": int8, "nf4": nf4}[scheme]


def quantized_linears(model):
    """(name, module) of every ``nn.Linear`` whose weight is quantised: all but the output head."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head and m.weight is not getattr(head, "weight", None)]


def quantize_model(model, scheme: str, backend: str = "lumebench") -> dict:
    """Quantise ``model``'s Linear weights in place (weight-only, dequantised); returns what was done."""
    import torch

    fn = ({"int8": int8_rtn, "nf4": nf4_blockwise}[scheme] if backend == "lumebench" else
          _torchao_fn(scheme) if backend == "torchao" else _bnb_fn(scheme))
    layers = quantized_linears(model)
    if not layers:
        raise LumeError("the model has no Linear layers to quantise")
    n = 0
    with torch.no_grad():
        for _, mod in layers:
            mod.weight.copy_(fn(mod.weight))
            n += mod.weight.numel()
    return {"scheme": scheme, "backend": backend, "describe": DESCRIBE[scheme], "n_linear": len(layers),
            "n_weights": n, "version": _version(backend), "kept_full_precision": "output head, embeddings, norms"}


def _version(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if backend == "lumebench":
        from lumebench import __version__

        return __version__
    try:
        return version(backend)
    except PackageNotFoundError:
        return "not installed"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _load_bnb(spec, scheme: str):
    """The model loaded by transformers with bitsandbytes on a CUDA GPU (its kernels compute with the
    quantised weights): ``load_in_8bit`` or NF4, as Zhang et al."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    q = (BitsAndBytesConfig(load_in_8bit=True) if scheme == "int8" else
         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    model = AutoModelForCausalLM.from_pretrained(str(spec), quantization_config=q, use_safetensors=True,
                                                 trust_remote_code=False)
    tok = AutoTokenizer.from_pretrained(str(spec), trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok, {"scheme": scheme, "backend": "bitsandbytes", "describe": f"bitsandbytes {q.to_dict()}",
                        "version": _version("bitsandbytes")}


# ----------------------------------------------------------------------------------- the attack

def _evaluate(model, tok, benchmark: Benchmark, ev: AttackEval, mia: bool, out_dir: Path) -> dict:
    from lumebench.eval.batching import eval_mode
    from lumebench.eval.evaluate import evaluate

    with eval_mode(model):
        return evaluate(model, tok, benchmark, ev.config(mia=mia and benchmark.has_mia()), out_dir=out_dir)


def per_term(results: dict) -> dict:
    """The numbers compared: overall forget/retain knowledge and regurgitation, the 12 terms, MIA AUC."""
    from lumebench.attacks.common import scores_of

    out = {}
    for split, s in scores_of(results).items():
        for m in ("knowledge", "regurgitation"):
            out[f"{split}_{m}"] = s[m]
            for task, t in s["tasks"].items():
                out[f"{split}_{task}_{m}"] = t[m]
    out["mia_auc"] = results.get("mia_loss_acc")
    return out


def quantize(model_spec, benchmark: Benchmark, out, cfg: QuantizeConfig | None = None,
             ev: AttackEval | None = None) -> dict:
    """The quantisation attack on ``model_spec``, into ``out`` (``quantize.json``): the metrics before
    and after each scheme, and the change per term. A :class:`Step`."""
    cfg = (cfg or QuantizeConfig()).check()
    ev = ev or AttackEval()
    out = Path(out)
    key = step_key("quantize", model=identity(model_spec), config=dataclasses.asdict(cfg),
                   data=benchmark.fingerprint(), eval=ev.to_dict())

    def compute() -> dict:
        model, tok = load(model_spec)
        before = per_term(_evaluate(model, tok, benchmark, ev, cfg.mia, out / "eval" / "none"))
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        schemes = {}
        for scheme in cfg.schemes:
            if cfg.backend == "bitsandbytes" and _cuda():
                qmodel, qtok, info = _load_bnb(model_spec, scheme)
            else:
                model.load_state_dict(original)
                info = quantize_model(model, scheme, cfg.backend)
                qmodel, qtok = model, tok
            after = per_term(_evaluate(qmodel, qtok, benchmark, ev, cfg.mia, out / "eval" / scheme))
            schemes[scheme] = {"scheme": info, "scores": after,
                               "delta": {k: delta(after.get(k), v) for k, v in before.items()}}
            d = schemes[scheme]["delta"]
            log.info("quantised %s: forget knowledge %+.3f, forget regurgitation %+.3f", scheme,
                     d.get("forget_knowledge") or 0.0, d.get("forget_regurgitation") or 0.0)
        result = {"attack": "quantize", "protocol": "Zhang et al. 2025 (arXiv 2410.16454): weight-only quantisation, "
                                                    "metrics again", "config": dataclasses.asdict(cfg),
                  "eval": ev.to_dict(), "unquantized": before, "schemes": schemes}
        write_result(out, "quantize", result)
        return result

    return Step(out, key, what="quantisation attack").run(compute)["result"]
