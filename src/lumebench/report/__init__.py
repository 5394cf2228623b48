"""Running the whole benchmark and reporting it.

- :mod:`~lumebench.pipeline.config` — the ``lume run`` config (YAML/TOML dataclasses, the default);
- :mod:`~lumebench.pipeline.run` — ``lume run``: data -> target -> methods x seeds -> report, resumable;
- :mod:`~lumebench.report.results` — reading a run's per-method curves and results;
- :mod:`~lumebench.report.leaderboard` — ``leaderboard.md`` / ``leaderboard.json``;
- :mod:`~lumebench.report.plots` — the figures (matplotlib, PNG);
- :mod:`~lumebench.report.html` — the self-contained ``report.html`` (``lume report RUN_DIR``).
"""
