"""The GradNorm membership-inference attack (opt-in metric ``gradnorm_auc``, issue 26).

Per MIA document (members and non-members, encoded as the LOSS attack encodes them): the loss
``model(ids, labels=ids).loss`` (mean next-token NLL) is back-propagated and the statistic is the
mean, over the model's parameter tensors that get a gradient, of the L2 norm of ``∂loss/∂θ`` — the
GradNorm attack as OpenUnlearning describes it (``mia_gradnorm``, p = 2; after Wang et al. 2024 /
Maini et al. 2024: a training document sits near a minimum, so its gradient is small). The score is
``-statistic`` (higher = more likely a member) and the metric is its AUC with members labelled 1
(:func:`lumebench.eval.mia.roc_auc`, the official AUC): 0.5 = members indistinguishable. Each record
also keeps the global norm ``||∂loss/∂θ||₂`` over all parameters. One backward pass per document:
opt-in (``lume eval --metric gradnorm_auc``). The model's gradients are left empty afterwards.
"""

from __future__ import annotations

from lumebench.eval.batching import eval_mode
from lumebench.eval.mia import _encode, max_model_length, model_device, roc_auc


def grad_norms(model, ids: list[int]) -> tuple[float, float]:
    """(mean of the per-tensor L2 norms, global L2 norm) of the gradient of one document's loss."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    x = torch.tensor([ids], device=model_device(model))
    with eval_mode(model), torch.enable_grad():
        model(x, labels=x).loss.backward()
    norms = [p.grad.detach().float().norm(2) for p in params if p.grad is not None]
    model.zero_grad(set_to_none=True)
    stacked = torch.stack(norms)
    return float(stacked.mean()), float(stacked.pow(2).sum().sqrt())


def gradnorm_mia(inp) -> dict:
    """The metric ``gradnorm_auc`` (:data:`lumebench.metrics_table.METRICS`); None without MIA documents."""
    docs = [(d, 1) for d in inp.benchmark.mia_members] + [(d, 0) for d in inp.benchmark.mia_nonmembers]
    if not inp.benchmark.mia_members or not inp.benchmark.mia_nonmembers:
        return {"results": {"mia_gradnorm_auc": None}, "documents": []}
    max_len = max_model_length(inp.model)
    records = []
    for d, member in docs:
        ids, _ = _encode(inp.tokenizer, d.document, max_len)
        mean_norm, total = grad_norms(inp.model, ids)
        records.append({"id": d.id, "member": bool(member), "grad_norm": mean_norm, "grad_norm_global": total,
                        "score": -mean_norm})
    auc = roc_auc([int(r["member"]) for r in records], [r["score"] for r in records])
    return {"results": {"mia_gradnorm_auc": auc}, "documents": records,
            "score_convention": "score = -mean per-tensor L2 gradient norm; members labelled 1"}
