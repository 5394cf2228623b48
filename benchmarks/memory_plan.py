"""Memory per GPU for unlearning OLMo-1B / OLMo-7B: computed from bytes per parameter, checked on a
measured small model (SmolLM2-135M, offline, CPU).

    python benchmarks/memory_plan.py [--batch 32 --gpus 8 --length 256]

Model state per GPU (bytes per parameter, P parameters, N GPUs):
- DDP, full weights: fp32 master weights 4 + fp32 gradients 4 + AdamW moments 8 + DDP's gradient
  buckets 4 = 20, plus the bf16 copies autocast caches during the forward pass, 2: **22 P**.
- FSDP2 on N GPUs, full weights: (4 + 4 + 8) / N sharded, plus the unsharded bf16 working set: the
  root group (embeddings, LM head) and two decoder layers (the one computing and the one prefetched)
  in bf16, and one layer's fp32 gradients before the reduce-scatter.
- LoRA (DDP), r 16 on every linear layer: the frozen base in bf16, 2 P, plus 20 bytes per adapter
  parameter.
- Evaluation under FSDP2: each GPU holds the whole model in bf16 (2 P) for its share of the rows, on
  top of the shards of the weights and AdamW state (gradients are freed): 12/N P + 2 P.

Activations (bf16 compute, no activation checkpointing), saved for the backward pass per token:
per decoder layer 22 h + 6 kv + 8 i bytes (kv = h without grouped-query attention: two RMSNorms
8 h each, their bf16 input, fp32 normalised copy and bf16 output; rotary q and k 2 h + 2 kv;
attention q, k, v, output 4 h + 4 kv; SwiGLU gate, SiLU(gate), up and their product 8 i), plus the
loss head's fp32 log-softmax 4 V; at the peak also the bf16 logits and their fp32 copy, 6 V more.
Per GPU the tokens are (forget + retain batch) / N x length.

The check: SmolLM2-135M (h 576, i 1536, 30 layers, V 49152) after one AdamW step holds exactly the
predicted state bytes, and the tensors autograd saves during a bf16 forward pass (counted with
``torch.autograd.graph.saved_tensors_hooks``, each storage once) are compared with the formula.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GB = 1e9


@dataclass
class Arch:
    name: str
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    tied: bool
    kv_hidden: int = 0  # width of k and v (grouped-query attention); 0 = hidden (multi-head)

    @property
    def kv(self) -> int:
        return self.kv_hidden or self.hidden

    @property
    def layer_params(self) -> int:
        h, i, kv = self.hidden, self.intermediate, self.kv
        return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q, o; k, v; gate, up, down; two RMSNorms

    @property
    def root_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    def lora_params(self, r: int = 16) -> int:
        h, i, kv = self.hidden, self.intermediate, self.kv
        return self.layers * r * (2 * (h + h) + 2 * (h + kv) + 2 * (h + i) + (i + h))


# OLMo-7B-0724 / OLMo-1B-0724 (the LUME targets' architectures: config.json of the hub models)
OLMO_7B = Arch("OLMo-7B", 4096, 11008, 32, 50304, tied=False)
OLMO_1B = Arch("OLMo-1B", 2048, 8192, 16, 50304, tied=True)


def saved_activation_bytes_per_token(a: Arch) -> float:
    """What autograd keeps for the backward pass: per layer 22 h + 6 kv + 8 i, the loss head 4 V."""
    return a.layers * (22 * a.hidden + 6 * a.kv + 8 * a.intermediate) + 4 * a.vocab


def activation_bytes_per_token(a: Arch) -> float:
    """The peak: the saved tensors plus the transient bf16 logits and their fp32 copy (6 V)."""
    return saved_activation_bytes_per_token(a) + 6 * a.vocab


def state_bytes(a: Arch, mode: str, gpus: int) -> float:
    P = a.params
    if mode == "ddp":
        return 22 * P
    if mode == "fsdp":
        working = 2 * (a.root_params + 2 * a.layer_params) + 4 * a.layer_params
        return 16 * P / gpus + working
    if mode == "lora":
        return 2 * P + 20 * a.lora_params()
    if mode == "eval-fsdp":
        return 12 * P / gpus + 2 * P
    raise ValueError(mode)


def plan(batch: int, gpus: int, length: int) -> str:
    tokens = 2 * batch / gpus * length  # forget + retain examples per GPU
    lines = [f"| model | parameters | setup | model state / GPU | activations / GPU ({2 * batch // gpus} x {length} tokens) "
             f"| total / GPU | 8 x 40 GB | 8 x 80 GB |", "|---|---|---|---|---|---|---|---|"]
    for a in (OLMO_1B, OLMO_7B):
        act = tokens * activation_bytes_per_token(a)
        for mode, label in (("ddp", "DDP, full weights"), ("fsdp", f"FSDP2 x {gpus}, full weights"),
                            ("lora", "LoRA r16 (DDP)"), ("eval-fsdp", f"evaluation under FSDP2 x {gpus}")):
            st = state_bytes(a, mode, gpus)
            act_here = 0.0 if mode == "eval-fsdp" else act
            total = st + act_here
            fit = lambda cap: "fits" if total < 0.9 * cap * GB else "no"  # 10 % for the CUDA context, fragmentation
            lines.append(f"| {a.name} | {a.params / 1e9:.2f} B | {label} | {st / GB:.1f} GB | "
                         f"{act_here / GB:.1f} GB | {total / GB:.1f} GB | {fit(40)} | {fit(80)} |")
    return "\n".join(lines)


def measure(length: int = 256, batch: int = 2) -> str:
    """State and saved-activation bytes of SmolLM2-135M, measured against the formulas."""
    import torch

    from common import load_smollm2

    model, tok = load_smollm2()
    cfg = model.config
    kv = cfg.hidden_size // cfg.num_attention_heads * cfg.num_key_value_heads
    a = Arch("SmolLM2-135M", cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size,
             tied=bool(getattr(cfg, "tie_word_embeddings", False)), kv_hidden=kv)
    P = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (batch, length))

    # model state: fp32 weights, gradients and AdamW moments after one step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    opt.step()
    tensors = [p for p in model.parameters()] + [p.grad for p in model.parameters()]
    tensors += [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor) and v.ndim]
    state = sum(t.numel() * t.element_size() for t in tensors)
    opt.zero_grad(set_to_none=True)

    # activations: what autograd saves in a bf16 forward pass (+ the loss head as the trainer computes it)
    model.to(torch.bfloat16)
    seen: dict[int, int] = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:  # a tensor without storage (e.g. a view of a sparse tensor)
            pass
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:])
    saved = sum(v for k, v in seen.items() if k not in params)
    del loss, logits
    pred_state = 16 * P
    pred_act = batch * length * saved_activation_bytes_per_token(a)
    return (f"SmolLM2-135M ({P / 1e6:.1f} M parameters, h {a.hidden}, i {a.intermediate}, {a.layers} layers, "
            f"V {a.vocab}; {a.params / 1e6:.1f} M by the formula)\n"
            f"  model state after one AdamW step: measured {state / 2**20:.1f} MiB, 16 bytes x P = "
            f"{pred_state / 2**20:.1f} MiB (ratio {state / pred_state:.3f})\n"
            f"  activations saved for the backward pass, bf16, {batch} x {length} tokens: measured {saved / 2**20:.1f} MiB, formula "
            f"{pred_act / 2**20:.1f} MiB (ratio {saved / pred_act:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="global forget batch (the retain batch is as large)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--length", type=int, default=256, help="tokens per example (prompt + target)")
    ap.add_argument("--no-measure", action="store_true")
    args = ap.parse_args()
    print(plan(args.batch, args.gpus, args.length))
    if not args.no_measure:
        print()
        print(measure())


if __name__ == "__main__":
    main()
