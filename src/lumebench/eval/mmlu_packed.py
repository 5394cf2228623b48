"""MMLU's packed suffixes: the suffixes of several questions of a subject in ONE forward over the
subject's cached prefix (:func:`lumebench.eval.mmlu_engines.predict_shared_prefix`).

The suffixes are laid one after another in a single sequence, each with the positions that follow
the prefix (they restart at the prefix length for every question). The linear layers, norms and
rotary embeddings treat every token on its own, so they see one matrix of ``CHUNK`` questions'
tokens instead of one per question: on a CPU a ~70-token suffix reads every weight of the model
from memory for little work, and packing a few suffixes keeps the matrix units fed (and saves the
per-forward Python overhead). The attention is the only place where the questions meet: the model
runs with a private attention implementation (:func:`_attention`, registered with transformers'
``AttentionInterface``; the model's setting is restored afterwards) that calls transformers' own
SDPA attention once PER QUESTION, with that question's queries, the prefix's keys and values
followed by its own, and the causal mask the cached path builds: exactly the attention of a
suffix run alone over the cache, with no key of another question and no padding.

The predictions equal the reference engine's; the candidate probabilities differ from the
one-suffix-a-forward path only in the last bits of the matrix products (the BLAS kernels pick their
blocking from the number of rows; SmolLM2-135M: at most 3e-6 against the reference, as before).
A question's bits depend on which questions share its forward, so the chunks are fixed by the
question's index in its subject (``index // CHUNK``) and ``parallel_rows`` splits a subject only at
chunk boundaries (:func:`lumebench.eval.mmlu._predict_parallel`): the workers give the serial bits.
"""

from __future__ import annotations

from typing import Sequence

CHUNK = 8  # questions per forward (measured on the 4 x 25 benchmark workload: docs/speed.md)
NAME = "lume_mmlu_packed"
_registered = False


#: the architectures whose attention is plain causal SDPA over rotary positions (no chunked or
#: sliding attention, no sinks, nothing the mask would carry): SmolLM2 and the tiny model are llama,
#: the OLMo targets olmo / olmo2. Any other model runs each suffix in a forward of its own.
PACKABLE_TYPES = ("llama", "olmo", "olmo2")


def packable(model, cache) -> bool:
    """The packed path applies: a known architecture (:data:`PACKABLE_TYPES`) attending with
    transformers' SDPA, every layer of ``cache`` a plain growing one (no sliding window), and every
    attention module carrying its layer index (where its keys go in the pack)."""
    from lumebench.eval.kv_cache import plain_dynamic

    cfg = getattr(model, "config", None)
    if (getattr(cfg, "model_type", None) not in PACKABLE_TYPES or getattr(cfg, "_attn_implementation", None) != "sdpa"
            or getattr(cfg, "sliding_window", None) is not None or not cache.layers or not plain_dynamic(cache)):
        return False
    attention = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    return len(attention) == len(cache.layers) and all(isinstance(getattr(m, "layer_idx", None), int) for m in attention)


def _attention(module, query, key, value, attention_mask, **kwargs):
    """Transformers' SDPA attention, once per packed question (see the module docstring)."""
    return kwargs.pop("lume_pack").attend(module, query, key, value, kwargs)


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, _attention)
        _registered = True


class _Pack:
    """The prefix's keys and values of every layer, in buffers with room for the longest suffix
    (each question writes its own keys after the prefix; the next one overwrites them), and the
    current forward's question spans."""

    def __init__(self, cache, plen: int, room: int):
        self.plen, self.keys, self.values, self.masks, self.spans = plen, [], [], {}, []
        for layer in cache.layers:
            for name, out in (("keys", self.keys), ("values", self.values)):
                t = getattr(layer, name)
                buf = t.new_empty(t.shape[0], t.shape[1], plen + room, t.shape[3])
                buf[:, :, :plen] = t[:, :, :plen]
                out.append(buf)

    def mask(self, n: int, query):
        """The cached path's mask for an ``n``-token suffix (key ``j`` is seen by query ``i`` when
        ``j <= plen + i``), built once per length as the additive mask SDPA makes of a boolean one."""
        import torch

        if n not in self.masks:
            seen = torch.ones(n, self.plen + n, dtype=torch.bool, device=query.device).tril(self.plen)
            self.masks[n] = torch.zeros(seen.shape, dtype=query.dtype, device=query.device).masked_fill_(
                ~seen, float("-inf"))[None, None]
        return self.masks[n]

    def attend(self, module, query, key, value, kwargs):
        """Transformers' ``sdpa_attention_forward`` for each question, with the key/value heads
        shared by SDPA itself (``enable_gqa``) instead of copied per query head (``repeat_kv``): the
        same kernel on the same numbers (the same bits; 8 % less attention time on SmolLM2)."""
        import torch

        kb, vb, p = self.keys[module.layer_idx], self.values[module.layer_idx], self.plen
        gqa = {"enable_gqa": True} if getattr(module, "num_key_value_groups", 1) > 1 else {}
        outs = []
        for a, b in self.spans:
            n = b - a
            kb[:, :, p:p + n] = key[:, :, a:b]
            vb[:, :, p:p + n] = value[:, :, a:b]
            out = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], kb[:, :, :p + n], vb[:, :, :p + n], attn_mask=self.mask(n, query),
                dropout_p=0.0, scale=kwargs.get("scaling"), **gqa)
            outs.append(out.transpose(1, 2))
        return torch.cat(outs, 1).contiguous(), None


def run_packed(model, cache, plen: int, id_lists: Sequence[list[int]], chunks: Sequence[int],
               cands: list[int], progress=None) -> list[list[float]]:
    """Candidate probabilities of every sequence of ``id_lists`` (prefix ``plen`` tokens, already in
    ``cache``): the sequences with the same ``chunks`` label (consecutive) share one forward."""
    import torch

    _register()
    device = cache.layers[0].keys.device
    pack = _Pack(cache, plen, max(len(s) for s in id_lists) - plen)
    cfg = model.config
    before = cfg._attn_implementation
    preds: list[list[float]] = []
    start = 0
    cfg._attn_implementation = NAME
    try:
        while start < len(id_lists):
            end = start
            while end < len(id_lists) and chunks[end] == chunks[start]:
                end += 1
            tokens, positions, pack.spans, lasts = [], [], [], []
            for ids in id_lists[start:end]:
                a = len(tokens)
                tokens += ids[plen:]
                positions += range(plen, len(ids))
                pack.spans.append((a, len(tokens)))
                lasts.append(len(tokens) - 1)
            logits = model(input_ids=torch.tensor([tokens], device=device),
                           position_ids=torch.tensor([positions], device=device), use_cache=False,
                           logits_to_keep=torch.tensor(lasts, device=device), lume_pack=pack).logits[0]
            preds += torch.softmax(logits.float(), dim=-1)[:, cands].tolist()
            if progress is not None:
                progress.update(end - start)
            start = end
    finally:
        cfg._attn_implementation = before
    return preds
