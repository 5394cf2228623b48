"""Generation engines: the official one-prompt-at-a-time protocol, and a fast batched one that gives
the same scores.

``generate(model, tokenizer, rows, engine="fast"|"reference", ...) -> list[Generation]`` (in the
order of ``rows``).

**reference** = the official ``evaluate_generations.py`` protocol (SPEC.md §2): one prompt at a
time, ``tokenizer(input, return_tensors="pt")`` with the default special tokens,
``model.generate(input_ids, do_sample=False, max_new_tokens=256, use_cache=True,
pad_token_id=eos)`` without an attention mask, no early exit. ``official_extra_forward=True`` also
runs the official second, teacher-forced forward pass over ``input + output`` whose result no metric
uses — only so that speed comparisons pay the official cost.

**fast** = our own greedy loop with a KV cache:
- rows grouped by kind (sc rows usually run long, qa rows usually stop within a few tokens: mixing
  them wastes batch slots) and sorted by prompt length, longest first, within each group;
- left padding, an attention mask and position ids ``cumsum(mask) - 1``, so each row sees exactly
  the positions and context it sees alone;
- ``batch_size="auto"`` starts from a token budget and halves on out-of-memory, then retries;
- finished rows leave the batch (their KV-cache rows are dropped, as are the padding columns no
  remaining row needs) so compute shrinks as rows finish;
- early exits that cannot change any score (``early_exit=True``):
  * qa: stop once the text can no longer equal the gold after strip + lower. The test compares
    with all whitespace removed (clean-up only deletes spaces, and later tokens only append), the
    final-sigma of ``str.lower`` folded, and trailing U+FFFD (an incomplete UTF-8 character)
    ignored — so it is conservative;
  * sc: stop once ROUGE-L recall is 1 on the rouge tokens that can no longer change (the last two
    are dropped: a later token can extend the last word, and " n't" clean-up can merge the last
    word into the previous one). LCS can only grow as tokens are appended, so recall stays 1, and
    ROUGE-1 recall is then 1 too;
  * every row stops at EOS (any id of ``generation_config.eos_token_id``) or ``max_new_tokens``.
  The stored text of an early-exited row is a prefix of the reference text; every metric is equal.
  ``Generation.stop_reason`` says why a row stopped: ``eos``, ``max_new_tokens``, ``qa_mismatch``,
  ``rouge_settled``.

Greedy argmax ties resolve to the lowest id in both engines (``torch.argmax``). Batched float
arithmetic can differ from batch-1 arithmetic in the last bits; a near-tie flip is possible in
principle with real checkpoints (the tests check token identity on a tiny model).

Decoding (both engines): only the new tokens, ``skip_special_tokens=True,
clean_up_tokenization_spaces=False``, then the transformers-4 clean-up applied explicitly
(:func:`lumebench.eval.metrics.clean_up_tokenization`) — what the official environment did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

from lumebench.data.records import Row
from lumebench.errors import LumeError
from lumebench.eval.metrics import (clean_up_tokenization, em_still_possible, rouge_tokens,
                                    rougeL_recall_settled)
from lumebench.progress import bar, log

Engine = Literal["fast", "reference"]

# auto batch size: prompt+generation tokens held per batch. 16k tokens of KV cache is ~0.7 GB for a
# 135M model in fp32 and a few GB for 1B/7B in bf16 on a GPU; OOM halves it anyway.
AUTO_TOKEN_BUDGET = 16_384
AUTO_MAX_BATCH = 64

# generation_config settings that would make model.generate (the official call passes only
# do_sample=False, max_new_tokens, use_cache and pad_token_id; the rest comes from the checkpoint's
# generation_config) differ from a plain argmax loop: logits processors that change the argmax,
# other decoding strategies (beam search, contrastive search, DoLa, classifier-free guidance,
# constrained beams) and extra stopping rules. Sampling-only settings (temperature, top_p, ...) are
# inert under do_sample=False and are not listed.
_UNSUPPORTED = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                "min_length": 0, "min_new_tokens": None, "suppress_tokens": None,
                "begin_suppress_tokens": None, "forced_bos_token_id": None,
                "forced_eos_token_id": None, "sequence_bias": None, "encoder_repetition_penalty": 1.0,
                "exponential_decay_length_penalty": None, "num_beams": 1, "num_beam_groups": 1,
                "penalty_alpha": None, "dola_layers": None, "guidance_scale": None,
                "force_words_ids": None, "constraints": None, "watermarking_config": None,
                "stop_strings": None, "forced_decoder_ids": None}


@dataclass
class Generation:
    id: str
    text: str                      # decoded new tokens after clean-up
    token_ids: list[int] = field(repr=False)  # new tokens (including a final EOS)
    stop_reason: str               # eos | max_new_tokens | qa_mismatch | rouge_settled

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


def decode_new(tokenizer, token_ids: Sequence[int]) -> str:
    """Decode generated tokens the official way (see module docstring)."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True,
                            clean_up_tokenization_spaces=False)
    return clean_up_tokenization(text)


def eos_ids(model, tokenizer) -> set[int]:
    """The ids that end a generation — those of ``model.generation_config`` only, as
    ``model.generate`` (the official script) reads them; no fallback to the tokenizer's EOS, which
    would stop rows that the official run continues to 256 tokens."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def has_byte_fallback(tokenizer) -> bool:
    """Whether the decoder turns raw ``<0xNN>`` byte tokens into text (Llama-2, Mistral, Gemma).

    Such a decoder may replace several already-visible words with U+FFFD once a later byte makes
    the run invalid UTF-8, so "the last words cannot change" does not hold and the sc early exit
    (ROUGE-L settled) is switched off for it. Byte-level BPE (GPT-2, OLMo, SmolLM2, tiny) is safe.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.decoder is None:
        return True  # unknown decoder: be conservative
    import json

    return "ByteFallback" in json.dumps(json.loads(backend.to_str()).get("decoder"))


def _check_plain_greedy(model) -> None:
    gc = model.generation_config
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(gc, name, neutral)
        if name == "penalty_alpha" and (not value or (getattr(gc, "top_k", None) or 0) <= 1):
            continue  # contrastive search needs penalty_alpha > 0 and top_k > 1
        if name == "guidance_scale" and value in (None, 1, 1.0):
            continue
        if value is not None and value != neutral:
            raise LumeError(f"the model's generation_config sets {name}={value!r}, which the fast "
                            f"engine does not apply (the official generate would); use --engine reference")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


# --- reference engine ----------------------------------------------------------------------------

def _generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward):
    import torch

    pad = tokenizer.eos_token_id
    out: list[Generation] = []
    for row in bar(rows, desc="generating (reference engine)", unit="row"):
        input_ids = tokenizer(row.input, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            seq = model.generate(input_ids, do_sample=False, max_new_tokens=max_new_tokens,
                                 use_cache=True, pad_token_id=pad)
            new = seq[0, input_ids.shape[1]:].tolist()
            if official_extra_forward:  # the official unused NLL pass over question+answer
                both = tokenizer(row.input + row.output, return_tensors="pt").input_ids.to(model.device)
                labels = both.clone()
                labels[:, : input_ids.shape[1]] = -100
                model(both, labels=labels)
        stop = "eos" if new and new[-1] in eos_ids(model, tokenizer) else "max_new_tokens"
        out.append(Generation(row.id, decode_new(tokenizer, new), new, stop))
    return out


# --- fast engine ---------------------------------------------------------------------------------

class _Tracker:
    """Per-row state of the fast loop: generated ids and the early-exit test."""

    def __init__(self, row: Row, early_exit: bool, sc_exit: bool = True):
        self.row = row
        self.ids: list[int] = []
        self.early_exit = early_exit
        self.sc_exit = sc_exit
        self.gold_tokens = rouge_tokens(row.output) if row.kind == "sc" else None

    def stop_reason(self, tokenizer, eos: set[int], max_new_tokens: int) -> str | None:
        if self.ids and self.ids[-1] in eos:
            return "eos"
        if len(self.ids) >= max_new_tokens:
            return "max_new_tokens"
        if not self.early_exit:
            return None
        text = decode_new(tokenizer, self.ids)
        if self.row.kind == "qa":
            if not em_still_possible(self.row.output, text):
                return "qa_mismatch"
        elif self.sc_exit and rougeL_recall_settled(self.gold_tokens, text):
            return "rouge_settled"
        return None


def _cache_kwarg(model) -> str:
    """``cache`` in recent transformers (``past_key_values`` is deprecated there), else the old name."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _run_batch(model, tokenizer, rows: list[Row], prompts: list[list[int]], *, max_new_tokens,
               early_exit, eos, pad_id, sc_exit: bool) -> list[Generation]:
    import torch
    from transformers import DynamicCache

    device = model.device
    n = len(rows)
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    trackers = [_Tracker(r, early_exit, sc_exit) for r in rows]
    cache_kw = _cache_kwarg(model)
    alive = list(range(n))  # indices into rows of the batch rows, in cache order
    cache = DynamicCache()
    results: dict[int, Generation] = {}
    step_input = ids
    while alive:
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)[:, -step_input.shape[1]:]
        logits = model(input_ids=step_input, attention_mask=mask, position_ids=position_ids,
                       use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits
        next_tok = logits[:, -1, :].float().argmax(-1)
        keep = []
        for slot, (i, tok) in enumerate(zip(alive, next_tok.tolist())):
            t = trackers[i]
            t.ids.append(tok)
            reason = t.stop_reason(tokenizer, eos, max_new_tokens)
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
            if trim and all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers):
                mask = mask[:, trim:]
                for layer in cache.layers:
                    layer.keys = layer.keys[:, :, trim:, :]
                    layer.values = layer.values[:, :, trim:, :]
    return [results[i] for i in range(n)]


def _auto_batch(prompt_len: int, max_new_tokens: int) -> int:
    return max(1, min(AUTO_MAX_BATCH, AUTO_TOKEN_BUDGET // (prompt_len + max_new_tokens)))


def _generate_fast(model, tokenizer, rows, max_new_tokens, batch_size, early_exit):
    import torch

    _check_plain_greedy(model)
    eos = eos_ids(model, tokenizer)
    sc_exit = not has_byte_fallback(tokenizer)  # once per call: it serialises the tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = [tokenizer(r.input).input_ids for r in rows]
    # sc rows first (they run long), then qa; longest prompt first within each kind
    order = sorted(range(len(rows)), key=lambda i: (rows[i].kind != "sc", -len(prompts[i]), i))
    out: dict[int, Generation] = {}
    cap: int | None = None if batch_size == "auto" else int(batch_size)
    pos = 0
    progress = bar(total=len(rows), desc="generating (fast engine)", unit="row")
    with torch.inference_mode():
        while pos < len(order):
            first = order[pos]
            bs = _auto_batch(len(prompts[first]), max_new_tokens) if batch_size == "auto" else int(batch_size)
            if cap is not None:
                bs = min(bs, cap)
            # a batch never mixes kinds
            chunk = [i for i in order[pos: pos + bs] if rows[i].kind == rows[first].kind]
            try:
                gens = _run_batch(model, tokenizer, [rows[i] for i in chunk], [prompts[i] for i in chunk],
                                  max_new_tokens=max_new_tokens, early_exit=early_exit, eos=eos,
                                  pad_id=pad_id, sc_exit=sc_exit)
            except RuntimeError as e:
                if not _is_oom(e) or len(chunk) == 1:
                    raise
                cap = max(1, len(chunk) // 2)
                log.info("out of memory at batch size %d; retrying with %d", len(chunk), cap)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, g in zip(chunk, gens):
                out[i] = g
            pos += len(chunk)
            progress.update(len(chunk))
    progress.close()
    return [out[i] for i in range(len(rows))]


def generate(model, tokenizer, rows: Sequence[Row], *, engine: Engine = "fast",
             max_new_tokens: int = 256, batch_size: int | str = "auto", early_exit: bool = True,
             official_extra_forward: bool = False) -> list[Generation]:
    """Greedy generations for ``rows`` (returned in the same order). See the module docstring."""
    rows = list(rows)
    if not rows:
        return []
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        if engine == "reference":
            gens = _generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward)
        elif engine == "fast":
            gens = _generate_fast(model, tokenizer, rows, max_new_tokens, batch_size, early_exit)
        else:
            raise LumeError(f"unknown engine {engine!r}; choose fast or reference")
    finally:
        model.train(was_training)
    n_tok = sum(g.n_new_tokens for g in gens)
    log.debug("%s engine: %d rows, %d new tokens in %.1fs", engine, len(rows), n_tok,
              time.perf_counter() - t0)
    return gens
