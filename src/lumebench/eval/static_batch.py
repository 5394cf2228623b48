"""The fast engine's static batching (one batch from prefill to its last row, kinds not mixed): the
reference of the continuous batch, and the path of models whose cache it cannot re-shape; plus the
automatic batch size."""

from __future__ import annotations

from lumebench.data.records import Row
from lumebench.eval import kv_cache
from lumebench.eval.batching import cache_kwarg, halved_batch
from lumebench.eval.decoding import Generation, GenerationStats, decode_new
from lumebench.eval.early_exit import Tracker

# auto batch size: prompt+generation tokens held per batch. 16k tokens of KV cache is ~0.7 GB for a
# 135M model in fp32 and a few GB for 1B/7B in bf16 on a GPU; OOM halves it anyway.
AUTO_TOKEN_BUDGET = 16_384
AUTO_MAX_BATCH = 64


def run_batch(model, tokenizer, rows: list[Row], prompts: list[list[int]], *, max_new_tokens,
              early_exit, eos, pad_id, sc_exit: bool, check_every: int | None = None,
              stats: GenerationStats | None = None) -> list[Generation]:
    """Static batching (the slow path of the fast engine, kept as its reference): one batch from
    prefill to its last row, one token per forward, finished rows dropped."""
    import torch

    device = model.device
    n = len(rows)
    ids, mask = kv_cache.left_padded(prompts, pad_id, device)
    trackers = [Tracker(r, tokenizer, eos, max_new_tokens, early_exit, sc_exit, check_every, stats) for r in rows]
    cache_kw = cache_kwarg(model)
    alive = list(range(n))  # indices into rows of the batch rows, in cache order
    cache = kv_cache.new_cache()
    results: dict[int, Generation] = {}
    step_input = ids
    while alive:
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)[:, -step_input.shape[1]:]
        logits = model(input_ids=step_input, attention_mask=mask, position_ids=position_ids,
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits
        next_tok = logits[:, -1, :].float().argmax(-1)
        if stats is not None and step_input is ids:
            stats.prefills += 1
        elif stats is not None:
            stats.forwards += 1
            stats.rows_per_forward += len(alive)
        keep = []
        for slot, (i, tok) in enumerate(zip(alive, next_tok.tolist())):
            t = trackers[i]
            reason = t.push(tok)
            if reason is None:
                keep.append(slot)
            else:
                results[i] = Generation(rows[i].id, decode_new(tokenizer, t.ids), t.ids, reason)
        if not keep:
            break
        mask = torch.cat([mask, torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=device)], 1)
        step_input = next_tok[:, None]
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, step_input = mask[index], step_input[index]
            alive = [alive[s] for s in keep]
            # drop the left padding columns that no remaining row needs
            trim = int((mask.sum(0) == 0).long().cumprod(0).sum())
            if trim and kv_cache.plain_dynamic(cache):
                mask = mask[:, trim:]
                for layer in cache.layers:
                    layer.keys = layer.keys[:, :, trim:, :]
                    layer.values = layer.values[:, :, trim:, :]
    if stats is not None:
        stats.new_tokens += sum(len(t.ids) for t in trackers)
    return [results[i] for i in range(n)]


def auto_batch(prompt_len: int, max_new_tokens: int) -> int:
    return max(1, min(AUTO_MAX_BATCH, AUTO_TOKEN_BUDGET // (prompt_len + max_new_tokens)))


def generate_static(model, tokenizer, rows, prompts, order, out, progress, *, max_new_tokens, batch_size,
                    early_exit, eos, pad_id, sc_exit, check_every, stats):
    order = [i for i in order if i not in out]
    cap: int | None = None if batch_size == "auto" else int(batch_size)
    pos = 0
    while pos < len(order):
        first = order[pos]
        bs = auto_batch(len(prompts[first]), max_new_tokens) if batch_size == "auto" else int(batch_size)
        if cap is not None:
            bs = min(bs, cap)
        # a batch never mixes kinds
        chunk = [i for i in order[pos: pos + bs] if rows[i].kind == rows[first].kind]
        try:
            gens = run_batch(model, tokenizer, [rows[i] for i in chunk], [prompts[i] for i in chunk],
                             max_new_tokens=max_new_tokens, early_exit=early_exit, eos=eos,
                             pad_id=pad_id, sc_exit=sc_exit, check_every=check_every, stats=stats)
        except RuntimeError as e:
            cap = halved_batch(e, len(chunk), "generation")
            continue
        for i, g in zip(chunk, gens):
            out[i] = g
        pos += len(chunk)
        progress.update(len(chunk))

