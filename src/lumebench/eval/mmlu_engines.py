"""MMLU's engines (see :mod:`lumebench.eval.mmlu` for the protocol): the candidate probabilities of
each prompt's next token.

- :func:`predict_reference`: batch 1, the full prompt, full logits — Open-Instruct's
  ``get_next_word_predictions(batch_size=1)``, the official cost;
- :func:`predict_last_token`: the same forward with the logits of the last token only (the one read);
- :func:`predict_shared_prefix`: prompts that share a long token prefix (a subject's header and
  5 shots): the prefix runs ONCE, then the questions' suffixes run over the prefix's KV cache, with
  the logits of their last token only. The suffixes of ``CHUNK`` questions run in ONE forward,
  packed one after another without padding, each attending to the prefix and to itself alone
  (:mod:`lumebench.eval.mmlu_packed`; the prefix's keys are never copied per question). Where the
  model's attention is not transformers' SDPA, each suffix runs alone over the cache, whose buffers
  keep room for the longest suffix (each suffix writes its keys after the prefix, the next one
  overwrites them). Padded batches of suffixes (an earlier version) paid their padding in full and
  ran at 4.4x the official protocol (``benchmarks/mmlu_speed.py``, docs/speed.md);
- :func:`predict_fast`: the fast engine on one subject's ``(prompt, shots used)`` pairs: prompts with
  the same number of shots share a cached prefix (a group of one, or bf16/fp16, where a cached
  prefix changes the attention's last bits (:func:`lumebench.eval.mia.one_at_a_time`): last-token
  forwards of the full prompt).

Every engine takes the softmax over the whole vocabulary in float32, as transformers 4.45 (the
official environment) returned float32 logits from a bf16 model, and reads the four candidates
from it: the candidates' probabilities (and so a near-tie's rounding, and Open-Instruct's first-index
tie rule in :func:`lumebench.eval.mmlu.pick`) are the official ones.
"""

from __future__ import annotations

from typing import Sequence

from lumebench.eval.batching import cache_kwarg
from lumebench.eval.mia import model_device, one_at_a_time
from lumebench.progress import bar


def predict_reference(model, tokenizer, prompts: Sequence[str], cands: list[int],
                      desc: str = "MMLU") -> list[list[float]]:
    """Batch 1, full prompt, full logits: exactly ``get_next_word_predictions(batch_size=1)``.
    Returns the softmax probabilities of the candidate tokens for each prompt."""
    import torch
    device = model_device(model)
    preds = []
    for p in bar(prompts, desc=f"{desc} (reference)", unit="q"):
        enc = tokenizer([p], return_tensors="pt")
        logits = model(input_ids=enc["input_ids"].to(device),
                       attention_mask=enc["attention_mask"].to(device)).logits[:, -1, :]
        preds.append(torch.softmax(logits.float(), dim=-1)[0, cands].tolist())
    return preds


def predict_last_token(model, tokenizer, prompts: Sequence[str], cands: list[int],
                       desc: str = "MMLU") -> list[list[float]]:
    """:func:`predict_reference` with the logits computed only at the last token, the one read."""
    import torch
    device = model_device(model)
    preds = []
    for p in bar(prompts, desc=desc, unit="q"):
        enc = tokenizer([p], return_tensors="pt")
        logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                       logits_to_keep=1).logits[:, -1, :]
        preds.append(torch.softmax(logits.float(), dim=-1)[0, cands].tolist())
    return preds


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """The length of the longest token prefix all of ``seqs`` share."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def predict_shared_prefix(model, tokenizer, id_lists: Sequence[list[int]], cands: list[int],
                          batch_size: int | str = "auto", desc: str = "MMLU",
                          prefix_len: int | None = None, chunks: Sequence[int] | None = None) -> list[list[float]]:
    """Candidate probabilities for token sequences that share a long prefix: the prefix runs once,
    then the suffixes over its KV cache, logits at their last token only (see the module
    docstring). ``batch_size`` is accepted for the callers' sake (no padded batches).
    ``prefix_len``: split there (a share of a subject's questions may have a longer common prefix
    than the whole subject; splitting where the whole subject splits gives the same bits).
    ``chunks``: a label per sequence; consecutive sequences with the same label run in one packed
    forward (:mod:`lumebench.eval.mmlu_packed`; default: ``CHUNK`` sequences at a time)."""
    import torch

    from lumebench.eval.kv_cache import new_cache, reset_to
    from lumebench.eval.mmlu_packed import CHUNK, packable, run_packed

    device = model_device(model)
    plen = _split(list(id_lists)) if prefix_len is None else prefix_len
    if plen <= 0 or plen >= min(len(s) for s in id_lists):
        raise ValueError("no shared prefix")
    kw = cache_kwarg(model)
    longest = max(len(s) for s in id_lists)
    positions = torch.arange(longest, device=device)[None, :]
    cache = new_cache()
    with torch.inference_mode():
        model(input_ids=torch.tensor([id_lists[0][:plen]], device=device), position_ids=positions[:, :plen],
              use_cache=True, logits_to_keep=1, **{kw: cache})
        if packable(model, cache):
            with bar(total=len(id_lists), desc=desc, unit="q") as progress:
                return run_packed(model, cache, plen, id_lists,
                                  [i // CHUNK for i in range(len(id_lists))] if chunks is None else chunks,
                                  cands, progress)
        preds = []
        for ids in bar(id_lists, desc=desc, unit="q"):  # one suffix a forward
            suffix = torch.tensor([ids[plen:]], device=device)
            logits = model(input_ids=suffix, position_ids=positions[:, plen:len(ids)], use_cache=True,
                           logits_to_keep=1, **{kw: cache}).logits[:, -1, :]
            preds.append(torch.softmax(logits.float(), dim=-1)[0, cands].tolist())
            reset_to(cache, plen)  # the next suffix overwrites this one's keys
    return preds


def _split(ids: list[list[int]]) -> int:
    """Where a group's prompts split into the shared prefix and their suffixes (0: no sharing)."""
    return min(common_prefix(ids), min(map(len, ids)) - 1) if len(ids) > 1 else 0


def group_prefixes(tokenizer, built: list[tuple[str, int]]) -> dict[int, int]:
    """{shots used: where that group of the prompts splits (0: no shared prefix)}."""
    groups: dict[int, list[list[int]]] = {}
    for p, k in built:
        groups.setdefault(k, []).append(tokenizer(p)["input_ids"])
    return {k: _split(ids) for k, ids in groups.items()}


def predict_fast(model, tokenizer, built: list[tuple[str, int]], cands: list[int],
                 batch_size: int | str, subject: str, prefixes: dict[int, int] | None = None) -> list[list[float]]:
    """The fast engine on one subject's ``(prompt, shots used)`` pairs: prompts with the same number
    of shots share a cached prefix (a group of one, or bf16/fp16: plain last-token forwards).
    ``prefixes``: :func:`group_prefixes` of the whole subject, when ``built`` is a share of it (the
    share then splits its prompts where the whole subject does: the same computation per question)."""
    from lumebench.eval.mmlu_packed import CHUNK

    prompts = [p for p, _ in built]
    preds: list = [None] * len(built)
    groups: dict[int, list[int]] = {}
    for i, (_, k) in enumerate(built):
        groups.setdefault(k, []).append(i)
    for k, idx in groups.items():
        ids = [tokenizer(prompts[i])["input_ids"] for i in idx]
        plen = _split(ids) if prefixes is None else prefixes[k]
        if plen > 0 and not one_at_a_time(model):
            got = predict_shared_prefix(model, tokenizer, ids, cands, batch_size, desc=subject, prefix_len=plen,
                                        chunks=[i // CHUNK for i in idx])
        else:
            got = predict_last_token(model, tokenizer, [prompts[i] for i in idx], cands, desc=subject)
        for i, p in zip(idx, got):
            preds[i] = p
    return preds
