"""What a generation is and how its tokens become text, shared by both engines
(:mod:`lumebench.eval.generation`): :class:`Generation`, the fast engine's :class:`GenerationStats`,
the official decoding (:func:`decode_new`), the stop ids (:func:`eos_ids`), the byte-fallback test
(:func:`has_byte_fallback`) and the check that the model's ``generation_config`` asks for plain
greedy decoding (:func:`check_plain_greedy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from lumebench.errors import LumeError
from lumebench.eval.metrics import clean_up_tokenization

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


def check_plain_greedy(model) -> None:
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



@dataclass
class GenerationStats:
    """What the fast engine did (filled when passed as ``generate(..., stats=GenerationStats())``).

    forwards: decoding forward passes (each verifies ``1 + K`` tokens per row); prefills: prompt
    forward passes (rows joining the batch); rows_per_forward: summed batch size over decoding
    forwards; draft_proposed / draft_accepted: draft tokens verified / kept; new_tokens: tokens kept;
    checks: early-exit tests run (decode + test); seconds: wall time per part (forward, prefill,
    draft, accept (acceptance + early-exit tests), cache (join, drop, compact)).
    """

    forwards: int = 0
    prefills: int = 0
    rows_per_forward: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    new_tokens: int = 0
    checks: int = 0
    seconds: dict = field(default_factory=lambda: {k: 0.0 for k in ("forward", "prefill", "draft", "accept", "cache")})

    @property
    def accepted_per_forward(self) -> float:
        """Draft tokens accepted per decoding forward, summed over the rows of the batch."""
        return self.draft_accepted / self.forwards if self.forwards else 0.0

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("forwards", "prefills", "rows_per_forward", "draft_proposed",
                                             "draft_accepted", "new_tokens", "checks")}
        out["accepted_per_forward"] = self.accepted_per_forward
        out["seconds"] = dict(self.seconds)
        return out

