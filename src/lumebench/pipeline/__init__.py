"""The pipeline: the jobs of a benchmark run and their configs.

- :mod:`~lumebench.pipeline.data` — the benchmark of a run (generated once, or loaded);
- :mod:`~lumebench.pipeline.target` — memorisation fine-tuning (``lume finetune``, cached targets);
- :mod:`~lumebench.pipeline.unlearn` / :mod:`~lumebench.pipeline.unlearn_config` — one method on a
  target (``lume unlearn``) and its settings;
- :mod:`~lumebench.pipeline.run` — ``lume run``: data -> target -> methods x seeds -> report;
- :mod:`~lumebench.pipeline.sweep` — ``lume sweep``: hyperparameters chosen on validation rows;
- :mod:`~lumebench.pipeline.config` / :mod:`~lumebench.pipeline.configfile` — the typed run config,
  checked at load, over the packaged ``default.yaml``.

Below it (imported by the jobs, the methods and the report alike): :mod:`lumebench.step`, the one
cached-step primitive, and :mod:`lumebench.curve`, the results schema of ``curve.jsonl``.
Nothing heavy is imported here.
"""
