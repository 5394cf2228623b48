"""Evaluation: generation engines (:mod:`.generation`), the official metrics (:mod:`.metrics`),
MIA attacks (:mod:`.mia`), MMLU (:mod:`.mmlu`) and one whole evaluation (:mod:`.evaluate`).

Importing the package registers the per-row metrics in :data:`lumebench.registry.METRICS`; each is
a function ``(gold, generated) -> float``.
"""

from lumebench.eval import metrics as _metrics
from lumebench.registry import METRICS

METRICS.register("rougeL_recall", help="ROUGE-L recall with the Porter stemmer (official regurgitation, sc rows)",
                 kind="sc")(_metrics.rougeL_recall)
METRICS.register("rouge1_recall", help="ROUGE-1 recall with the Porter stemmer (stored, unused by the official score)",
                 kind="sc")(_metrics.rouge1_recall)
METRICS.register("exact_match", help="strip + lowercase exact match (official knowledge, qa rows)",
                 kind="qa")(_metrics.exact_match)
