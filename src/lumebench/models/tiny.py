"""The ``tiny`` model: a few-million-parameter Llama and a byte-level BPE tokenizer, both built from
scratch and deterministic from the seed. It exists so that tests and the default run can train a
real model that memorises the benchmark in minutes on a laptop CPU.

Numbers (and why):
- vocab 4096: a byte-level BPE trained on the benchmark text itself; larger than the 256 bytes so
  each word is ~1.3 tokens (fewer tokens = cheaper memorisation), small enough for a tiny embedding.
- hidden 256, 4 layers, 4 heads, MLP 688 (~2.7x): ~4.3M parameters with the embeddings; SPEC §5
  measured this size memorising 11k tokens of text in a few minutes on 2 CPU cores.
- max_position 1024: Task1/Task3 documents are ~200-350 tokens with this vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

EOS = "<|endoftext|>"


@dataclass
class TinyConfig:
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    max_position: int = 1024
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE tokenizer (GPT-2 style, no BOS, EOS = ``<|endoftext|>``) on ``texts``.

    Deterministic: the BPE trainer is single-pass and its merges depend only on the text order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   clean_up_tokenization_spaces=True)
    fast.model_max_length = 1024
    return fast


def build_model(tokenizer, cfg: TinyConfig | None = None):
    """A freshly initialised ``LlamaForCausalLM`` sized by ``cfg``, seeded by ``cfg.seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyConfig()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
