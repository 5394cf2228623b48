"""Reporting a run from its result files alone (the run itself is :mod:`lumebench.pipeline`).

- :mod:`~lumebench.report.results` — reading a run's per-method curves and results;
- :mod:`~lumebench.report.leaderboard` — ``leaderboard.md`` / ``leaderboard.json``;
- :mod:`~lumebench.report.plots` — the figures (matplotlib, PNG);
- :mod:`~lumebench.report.html` — the self-contained ``report.html`` (``lume report RUN_DIR``).
"""
