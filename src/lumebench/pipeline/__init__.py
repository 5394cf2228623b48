"""The pipeline: the jobs of a benchmark run and their configs.

- :mod:`~lumebench.pipeline.step` — the one cached-step primitive (folder, key, compute-or-reuse,
  atomic ``done.json``) every resumable stage uses;
- :mod:`~lumebench.pipeline.data` — the benchmark of a run (generated once, or loaded);
- :mod:`~lumebench.pipeline.target` — memorisation fine-tuning (``lume finetune``, cached targets);
- :mod:`~lumebench.pipeline.unlearn` / :mod:`~lumebench.pipeline.unlearn_config` — one method on a
  target (``lume unlearn``) and its settings;
- :mod:`~lumebench.pipeline.run` — ``lume run``: data -> target -> methods x seeds -> report;
- :mod:`~lumebench.pipeline.sweep` — ``lume sweep``: hyperparameters chosen on validation rows;
- :mod:`~lumebench.pipeline.config` / :mod:`~lumebench.pipeline.configfile` — the typed run config,
  checked at load, over the packaged ``default.yaml``.

Nothing heavy is imported here.
"""
