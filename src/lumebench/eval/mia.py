"""Membership-inference attacks (MIA) on the LUME member / non-member documents.

The official score (SPEC.md §2) is the LOSS attack: for every document ``ids = tokenizer(document)``
(the tokenizer's default special tokens) and ``loss = model(ids, labels=ids).loss`` — the mean
next-token NLL over the document. ``mia_loss_acc`` is the ROC AUC of ``-loss`` with members
labelled 1 (``sklearn.metrics.roc_curve`` + ``auc``) and ``mia_final_score = 1 - 2·|AUC - 0.5|``
(1 = members and non-members indistinguishable).

Every attack below comes from the SAME teacher-forced forward pass per document (token
log-probabilities from a float32 ``log_softmax`` of the logits). Every score is oriented so that
**higher = more likely a member**, and its AUC is ``auc(roc_curve(member, score))``:

=============== =========================================================================
``loss``         ``-NLL`` (mean next-token NLL; the official attack, AUC = ``mia_loss_acc``)
``zlib``         ``-NLL / zlib_bytes`` where ``zlib_bytes = len(zlib.compress(doc.encode()))``
                 (Carlini et al. 2021 "zlib ratio": a low NLL relative to the text's generic
                 compressibility points to memorisation)
``min_k_20/40``  Min-K% (Shi et al. 2024): mean of the lowest ``k`` fraction of the token
                 log-probs (``max(1, int(k·n))`` tokens), k = 0.2 / 0.4
``min_k_pp_20/40`` Min-K%++ (Zhang et al. 2024): each token log-prob standardised by the mean and
                 standard deviation of ``log p`` over the vocabulary under the model's own
                 distribution at that position, ``(log p(x_t) - E_p[log p]) / sd_p[log p]``; then
                 the mean of the lowest ``k`` fraction
``reference``    ``NLL_reference - NLL_target`` (Carlini et al. 2021 reference-model attack;
                 only when a reference ``(model, tokenizer)`` is given)
=============== =========================================================================

Engines:
- ``fast``: documents sorted by length, batched only within buckets of similar length
  (:func:`length_buckets`: at most 2 % padding on a CPU, where batching gains little and padding
  costs in full, 25 % on a GPU), right-padded with an attention mask, per-row mean NLL from the
  logits at the real tokens, automatic batch size that halves on out-of-memory; each document
  scored exactly once (no duplicated rows in the AUC).
- ``reference``: the official protocol, one document at a time, ``model(ids, labels=ids).loss``
  (the other attacks from that same forward's logits).

Documents run whole, as the official script runs them. Only a model whose positions are looked up
in a table (absolute position embeddings, e.g. GPT-2's ``n_positions``) cannot run past its table;
there a document longer than the table is truncated to it — the official script would fail on it —
and its record says ``truncated: true``. Rotary models (Llama, OLMo, SmolLM2, the tiny model)
compute positions, so ``max_position_embeddings`` is a training length, not a limit, and nothing is
truncated.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

from lumebench.data.records import MiaDoc
from lumebench.distributed import map_sharded
from lumebench.errors import LumeError
from lumebench.eval.batching import eval_mode, pad_id, run_batches
from lumebench.eval.metrics import mia_final_score as mia_score  # the one formula (kept under this name)
from lumebench.progress import bar

MIN_K_RATIOS = (0.2, 0.4)
ATTACKS = ("loss", "zlib", "min_k_20", "min_k_40", "min_k_pp_20", "min_k_pp_40")
REFERENCE_ATTACK = "reference"

# The fast engine's "auto" batch size: how many bytes the batch's float32 logits plus one document's
# statistics (log-softmax, probabilities, p·log p: ~3 more logit-sized tensors) may take. 1 GiB holds
# ~6 Wikipedia-length documents (~600 tokens) of SmolLM2-135M (vocab 49k) per batch on CPU; on CUDA
# a quarter of the free memory is used.
CPU_LOGIT_BUDGET_BYTES = 1 << 30


# --------------------------------------------------------------------------------------------
# shared helpers (also used by lumebench.eval.mmlu)

def model_device(model):
    import torch
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def one_at_a_time(model) -> bool:
    """True when the fast engines must run one sequence at a time, as the official protocol does:
    the model computes in bf16/fp16 (on any device).

    There, linear layers give every row the same bits whatever the batch, but the attention kernel
    (``scaled_dot_product_attention``) does not: padding (a longer, masked key length) or several
    query tokens per forward (speculative drafts, a cached MMLU prefix) change the last bits of its
    bf16 output (SmolLM2-135M: a 22-token prompt left-padded to 184 changes layer 0's attention
    output by up to 1e-3; two tokens in one forward change layer 13's by 2e-7), and at SmolLM2's
    many near-ties that changes greedy tokens (2 of the first 8 sample rows batched, 0 of them one
    row at a time). On an H100 (bf16, SmolLM2-135M, ``benchmarks/eval_speed.py --device cuda``) the
    batched engine changed the generations of 8 of 60 raw rows and 1 of 12 rows after gradient
    ascent (ROUGE-L recall moved by up to 0.06). In float32 the batched engines give the official
    numbers, so nothing changes there (``lume run`` unlearns and evaluates in float32)."""
    import torch

    try:
        p = next(model.parameters())
    except StopIteration:  # pragma: no cover - a model without parameters
        return False
    return p.dtype in (torch.bfloat16, torch.float16)


def logit_budget_bytes(device) -> int:
    import torch
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(CPU_LOGIT_BUDGET_BYTES // 4, free // 4)
    return CPU_LOGIT_BUDGET_BYTES


ROTARY_CONFIG_FIELDS = ("rope_theta", "rope_scaling", "rope_parameters", "rotary_dim")


def max_model_length(model) -> int | None:
    """The longest input ``model`` can run: its position table's size for a model with absolute
    position embeddings; ``None`` (no limit, as in the official script) for a rotary model."""
    config = getattr(model, "config", None)
    if config is None or any(hasattr(config, f) for f in ROTARY_CONFIG_FIELDS):
        return None
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(n) if n else None


# --------------------------------------------------------------------------------------------
# per-document statistics from one row of logits

def token_stats(logits, ids) -> dict[str, float]:
    """NLL and the Min-K% / Min-K%++ scores of one document from its logits.

    ``logits``: ``[n, V]`` for the document's ``n`` tokens; ``ids``: ``[n]``. Position ``t`` predicts
    token ``t + 1`` (exactly the shift of ``model(ids, labels=ids).loss``).
    """
    import torch
    lp = torch.log_softmax(logits[:-1].float(), dim=-1)           # [n-1, V]
    target = ids[1:].unsqueeze(-1)
    tok_lp = lp.gather(-1, target).squeeze(-1)                     # [n-1]
    p = lp.exp()
    plogp = torch.where(p > 0, p * lp, torch.zeros_like(lp))
    mu = plogp.sum(-1)
    second = torch.where(p > 0, p * lp * lp, torch.zeros_like(lp)).sum(-1)
    sigma = (second - mu * mu).clamp_min(1e-12).sqrt()
    tok_pp = (tok_lp - mu) / sigma
    out = {"nll": float(-tok_lp.mean())}
    n = tok_lp.numel()
    for k in MIN_K_RATIOS:
        m = max(1, int(n * k))
        tag = int(round(k * 100))
        out[f"min_k_{tag}"] = float(torch.sort(tok_lp).values[:m].mean())
        out[f"min_k_pp_{tag}"] = float(torch.sort(tok_pp).values[:m].mean())
    return out


# The fast engine batches documents only in buckets of similar length: at most this fraction of a
# bucket's positions may be padding. On a CPU a batch buys almost nothing over one document at a time
# (one ~200-token document already keeps the matrix units busy) while padding costs in full, so
# there a bucket holds documents of (almost) equal length only; on a GPU batching pays for padding.
MAX_PADDING = {"cpu": 0.02, "cuda": 0.25}


def max_padding(device) -> float:
    return MAX_PADDING.get(device.type, MAX_PADDING["cuda"])


def length_buckets(items: Sequence[int], lengths: Sequence[int], max_pad: float) -> list[list[int]]:
    """Split ``items`` (sorted by decreasing ``lengths``) into consecutive buckets whose padding
    (``width * n - sum(lengths)``) stays within ``max_pad`` of the bucket's positions."""
    buckets: list[list[int]] = []
    cur: list[int] = []
    width = total = 0
    for item, n in zip(items, lengths):
        w = max(width, n)
        if cur and (w * (len(cur) + 1) - (total + n)) > max_pad * w * (len(cur) + 1):
            buckets.append(cur)
            cur, width, total = [], 0, 0
            w = n
        cur.append(item)
        width, total = w, total + n
    if cur:
        buckets.append(cur)
    return buckets


def _encode(tokenizer, text: str, max_len: int | None) -> tuple[list[int], bool]:
    ids = tokenizer(text)["input_ids"]
    if max_len is not None and len(ids) > max_len:
        return ids[:max_len], True
    return ids, False


def document_stats(model, tokenizer, texts: Sequence[str], *, batch_size: int | str = "auto",
                   engine: str = "fast", desc: str = "MIA") -> list[dict]:
    """One forward pass per document → ``{nll, min_k_*, min_k_pp_*, n_tokens, truncated}`` each,
    in the order of ``texts``. ``engine="reference"`` is the official batch-1 ``labels=ids`` loss."""
    import torch

    if engine not in ("fast", "reference"):
        raise LumeError(f"unknown MIA engine {engine!r} (choose fast or reference)")
    max_len = max_model_length(model)
    encoded = [_encode(tokenizer, t, max_len) for t in texts]
    for i, (ids, _) in enumerate(encoded):
        if len(ids) < 2:
            raise LumeError(f"MIA document {i} has fewer than 2 tokens: no next-token loss exists")
    docs = [ids for ids, _ in encoded]
    with eval_mode(model), torch.no_grad():
        if engine == "reference":
            results = _reference_stats(model, docs, desc)
        else:
            results = _fast_stats(model, docs, pad_id(tokenizer), batch_size, desc)
    for st, (ids, trunc) in zip(results, encoded):
        st["n_tokens"] = len(ids)
        st["truncated"] = trunc
    return results


def _reference_stats(model, docs: list[list[int]], desc: str) -> list[dict]:
    """The official protocol: one document at a time, ``model(ids, labels=ids).loss``."""
    import torch

    device = model_device(model)
    results = []
    for doc in bar(docs, desc=f"{desc} (reference)", unit="doc"):
        ids = torch.tensor([doc], device=device)
        out = model(input_ids=ids, labels=ids)
        st = token_stats(out.logits[0], ids[0])
        st["nll"] = float(out.loss)  # the official number itself
        results.append(st)
    return results


def _fast_stats(model, docs: list[list[int]], pad: int, batch_size: int | str, desc: str) -> list[dict]:
    """Documents longest first, in length buckets, right-padded with an attention mask (the padded
    positions' logits are never read), in batches that halve on out-of-memory."""
    import torch

    device = model_device(model)
    results: list[dict | None] = [None] * len(docs)
    order = sorted(range(len(docs)), key=lambda j: -len(docs[j]))
    if one_at_a_time(model):
        start = 1  # one document, no padding: the bits of the official batch-1 forward
    elif batch_size == "auto":
        vocab = int(getattr(model.config, "vocab_size", None) or 50_000)
        longest = len(docs[order[0]]) if order else 1
        row = longest * vocab * 4  # float32 logits of one document
        start = max(1, (logit_budget_bytes(device) - 3 * row) // row)  # + one row's statistics
    else:
        start = int(batch_size)

    def run(group: list[int]) -> None:
        for chunk in length_buckets(group, [len(docs[j]) for j in group], max_padding(device)):
            run_bucket(chunk)

    def run_bucket(chunk: list[int]) -> None:
        lens = [len(docs[j]) for j in chunk]
        width = max(lens)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, j in enumerate(chunk):
            ids[r, :lens[r]] = torch.tensor(docs[j])
            mask[r, :lens[r]] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for r, j in enumerate(chunk):
            results[j] = token_stats(logits[r, :lens[r]], ids[r, :lens[r]].to(device))

    run_batches(order, start, run, desc=desc)
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# AUC and the attacks

def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """AUC exactly as the official script: ``auc(*roc_curve(labels, scores)[:2])``."""
    from sklearn.metrics import auc, roc_curve
    fpr, tpr, _ = roc_curve(list(labels), list(scores))
    return float(auc(fpr, tpr))


def attack_scores(st: dict, document: str, ref_nll: float | None = None) -> dict[str, float]:
    """Every attack score of one document (higher = more likely a member), in ``ATTACKS`` order."""
    zbytes = len(zlib.compress(document.encode("utf-8")))
    scores = {"loss": -st["nll"], "zlib": -st["nll"] / zbytes}
    scores.update({a: st[a] for a in ATTACKS if a.startswith("min_k")})
    if ref_nll is not None:
        scores[REFERENCE_ATTACK] = ref_nll - st["nll"]
    return scores


def _check_docs(members: Sequence[MiaDoc], nonmembers: Sequence[MiaDoc]) -> None:
    if not members or not nonmembers:
        raise LumeError(f"MIA needs members and non-members (got {len(members)} members, "
                        f"{len(nonmembers)} non-members)")
    for name, docs in (("member", members), ("non-member", nonmembers)):
        for d in docs:
            if not isinstance(d.document, str) or not d.document.strip():
                raise LumeError(f"MIA {name} {d.id!r}: empty 'document'", field="document")


def run_mia(model, tokenizer, members: list[MiaDoc], nonmembers: list[MiaDoc], *,
            reference=None, batch_size: int | str = "auto", engine: str = "fast",
            pool=None) -> tuple[list[dict], dict]:
    """Score every member and non-member document with every attack.

    Returns ``(records, summary)``. ``records``: one dict per document (members first, input order)
    with ``id``, ``member``, ``n_tokens``, ``truncated``, ``nll`` (the official per-document loss),
    ``zlib_bytes``, ``ref_nll`` (with a reference) and ``scores`` {attack: score}. ``summary``:
    ``auc`` {attack: AUC}, ``mia_loss_acc`` (AUC of the LOSS attack), ``mia_final_score``,
    ``n_members``, ``n_nonmembers``, ``n_truncated``, ``engine``.

    ``reference``: an optional ``(model, tokenizer)`` whose NLL gives the reference attack.
    ``pool``: a :class:`lumebench.eval.parallel_rows.RowPool` of ``model`` whose workers score the
    documents, each alone (batch 1).
    """
    _check_docs(members, nonmembers)
    docs = list(members) + list(nonmembers)
    labels = [1] * len(members) + [0] * len(nonmembers)
    texts = [d.document for d in docs]
    # several processes: each scores its share of the documents (lumebench.distributed.map_sharded)
    if pool is not None:  # parallel rows: every document scored alone by a worker
        stats = pool.map(_document_one, [(t, engine) for t in texts], [len(t) for t in texts],
                         desc="MIA (parallel rows)", unit="doc")
    else:
        stats = map_sharded(lambda part: document_stats(model, tokenizer, part, batch_size=batch_size,
                                                        engine=engine, desc="MIA"), texts)
    ref_nll: list[float | None] = [None] * len(docs)
    if reference is not None:
        ref_model, ref_tok = reference
        ref_stats = map_sharded(lambda part: document_stats(ref_model, ref_tok, part, batch_size=batch_size,
                                                            engine=engine, desc="MIA reference model"), texts)
        ref_nll = [s["nll"] for s in ref_stats]

    records = []
    for d, lab, st, rn in zip(docs, labels, stats, ref_nll):
        rec = {"id": d.id, "member": bool(lab), "n_tokens": st["n_tokens"], "truncated": st["truncated"],
               "nll": st["nll"], "zlib_bytes": len(zlib.compress(d.document.encode("utf-8")))}
        if rn is not None:
            rec["ref_nll"] = rn
        rec["scores"] = attack_scores(st, d.document, rn)
        records.append(rec)

    names = list(ATTACKS) + ([REFERENCE_ATTACK] if reference is not None else [])
    for a in names:
        bad = next((r["id"] for r in records if not math.isfinite(r["scores"][a])), None)
        if bad is not None:  # a diverged model: sklearn would raise a bare ValueError
            raise LumeError(f"MIA attack {a}: non-finite score for document {bad} "
                            f"(the model's loss is NaN/inf — has it diverged?)")
    aucs = {a: roc_auc(labels, [r["scores"][a] for r in records]) for a in names}
    summary = {
        "auc": aucs,
        "mia_loss_acc": aucs["loss"],
        "mia_final_score": mia_score(aucs["loss"]),
        "n_members": len(members),
        "n_nonmembers": len(nonmembers),
        "n_truncated": sum(r["truncated"] for r in records),
        "engine": engine,
        "score_convention": "higher score = more likely a member; AUC = auc(roc_curve(member, score))",
    }
    return records, summary


def _document_one(model, tokenizer, item):
    """One document's statistics, alone (batch 1): a parallel-rows worker's item."""
    text, engine = item
    return document_stats(model, tokenizer, [text], batch_size=1, engine=engine, desc="MIA")[0]
