"""Robustness attacks on an unlearned model: does the forgotten content stay forgotten?

- :mod:`.relearn` — fine-tune on a part T of the forget documents, measure the rest V (Deeb & Roger
  2024, arXiv 2410.08827), with the same fine-tuning of the target as the control;
- :mod:`.quantize` — weight-only 8-bit / 4-bit quantisation, then the LUME metrics again (Zhang et al.
  2025, arXiv 2410.16454);
- :mod:`.paraphrase` — the forget facts asked with held-out templates and as fill-in-the-blank;
- :mod:`.logit_lens` — the gold answer's first token decoded from every layer's residual stream
  (nostalgebraist 2020; Łucki et al. 2024, arXiv 2409.18025).

Each attack is a job like those of :mod:`lumebench.pipeline`: it reuses the evaluation engine and the
training loop, writes only into its own ``--out`` folder (never the unlearned run's), and is a
resumable :class:`~lumebench.step.Step`. :mod:`.suite` runs the attacks of a run config's
``attacks:`` section on every method row of ``lume run``. See docs/attacks.md.
"""
