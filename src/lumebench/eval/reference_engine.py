"""The reference engine: the official one-prompt-at-a-time ``model.generate`` protocol (SPEC.md §2;
see :mod:`lumebench.eval.generation`)."""

from __future__ import annotations

from lumebench.eval.decoding import Generation, decode_new, eos_ids
from lumebench.progress import bar


def generate_reference(model, tokenizer, rows, max_new_tokens, official_extra_forward):
    import torch

    pad = tokenizer.eos_token_id  # the official generate's argument (batch 1: nothing is padded)
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

