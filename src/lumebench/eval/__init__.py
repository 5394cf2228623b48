"""Evaluation: generation engines (:mod:`.generation`), the official metrics (:mod:`.metrics`),
MIA attacks (:mod:`.mia`), MMLU (:mod:`.mmlu`), their shared batching glue (:mod:`.batching`) and
one whole evaluation (:mod:`.evaluate`).

The per-row metrics and their columns are :func:`lumebench.eval.metrics.score_row`.
"""
