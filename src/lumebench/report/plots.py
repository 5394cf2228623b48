"""Figures like the LUME paper's, drawn with matplotlib (Agg backend, PNG) from the run's curves.

- ``task1.png`` .. ``task3.png``: per task, forget and retain regurgitation and knowledge against
  epochs, one line per method (mean over seeds, a band of ± one standard deviation);
- ``mia_auc.png``: MIA AUC against epochs (0.5 = members indistinguishable from non-members);
- ``utility.png``: MMLU against epochs;
- ``scores.png``: final score and task aggregate against epochs;
- ``final_scores.png``: bar chart of the final scores (the target first).

    paths = make_plots("runs/default")      # -> [Path, ...] in runs/default/plots/
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lumebench.data.records import TASKS
from lumebench.metrics_table import METRICS, Metric
from lumebench.report.leaderboard import TARGET_LABEL, Row, build_leaderboard
from lumebench.report.results import MethodRun, collect, group

DPI = 100


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def drawn_in(figure: str) -> list[Metric]:
    """The metrics of the table drawn in ``figure`` (in the table's order)."""
    return [m for m in METRICS if m.plot == figure]


def _series(runs: list[MethodRun], key: str) -> tuple[list[float], list[float], list[float]]:
    """(epochs, mean, std) of metric ``key`` over the seeds, aligned on the evaluated epochs."""
    by_epoch: dict[float, list[float]] = {}
    for r in runs:
        for epoch, s in r.points():
            if s.get(key) is not None:
                by_epoch.setdefault(epoch, []).append(s[key])
    xs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[x]) for x in xs]
    stds = [statistics.stdev(by_epoch[x]) if len(by_epoch[x]) > 1 else 0.0 for x in xs]
    return xs, means, stds


def _draw(ax, groups: dict[str, list[MethodRun]], key: str, colors: dict[str, str]) -> bool:
    drew = False
    for label, runs in groups.items():
        xs, ys, sd = _series(runs, key)
        if not xs:
            continue
        ax.plot(xs, ys, marker="o", markersize=3, label=label, color=colors[label])
        if any(sd):
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)],
                            color=colors[label], alpha=0.15)
        drew = True
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    return drew


def _colors(labels) -> dict[str, str]:
    palette = [f"C{i}" for i in range(10)]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    tmp.replace(path)
    return path


def _legend(fig, axes) -> None:
    handles, labels = [], []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))


def make_plots(run_dir: str | Path, runs: list[MethodRun] | None = None,
               rows: list[Row] | None = None) -> list[Path]:
    """Draw every figure into ``run_dir/plots/``; returns the PNG paths in display order."""
    plt = _plt()
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    runs = collect(run_dir) if runs is None else runs
    rows = build_leaderboard(run_dir) if rows is None else rows
    groups = group(runs)
    colors = _colors(groups)
    paths: list[Path] = []

    for task in TASKS:
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
        for ax, m in zip(axes, drawn_in(f"{task.lower()}.png")):
            _draw(ax, groups, m.name, colors)
            ax.set_title(f"{m.label}\n({m.better} is better)", fontsize=10)
        axes[0].set_ylabel("score")
        fig.suptitle(f"{task}: regurgitation (ROUGE-L recall) and knowledge (exact match)", y=1.02)
        _legend(fig, axes)
        fig.subplots_adjust(bottom=0.22)
        paths.append(_save(fig, out / f"{task.lower()}.png"))
        plt.close(fig)

    single = [("mia_auc.png", "MIA AUC (loss attack; 0.5 = indistinguishable)", 0.5),
              ("utility.png", "utility: MMLU accuracy", 0.25)]
    for name, title, ref in single:
        key = drawn_in(name)[0].name
        fig, ax = plt.subplots(figsize=(7, 4))
        drew = _draw(ax, groups, key, colors)
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1,
                   label="0.5" if key == "mia_auc" else "chance (0.25)")
        ax.set_title(title if drew else f"{title}: not measured in this run", fontsize=10)
        ax.legend(fontsize=8, loc="best")
        paths.append(_save(fig, out / name))
        plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, m in zip(axes, sorted(drawn_in("scores.png"), key=lambda m: m.column)):
        _draw(ax, groups, m.name, colors)
        ax.set_title(f"{m.label} against epochs", fontsize=10)
    _legend(fig, axes)
    fig.subplots_adjust(bottom=0.25)
    paths.append(_save(fig, out / "scores.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4))
    labels = [r.label for r in rows]
    means = [r.metrics["final"].mean or 0.0 for r in rows]
    errs = [r.metrics["final"].std or 0.0 for r in rows]
    bar_colors = ["grey" if r.label == TARGET_LABEL else colors.get(r.label, "C0") for r in rows]
    bars = ax.bar(range(len(rows)), means, yerr=errs if any(errs) else None, color=bar_colors, capsize=4)
    for b, m, r in zip(bars, means, rows):
        text = f"{m:.3f}" + (" (diverged)" if r.status == "diverged" else "")
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, text, ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [l.replace(" (", "\n(") for l in labels], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("final score")
    ax.set_title("final score = mean(task aggregate, MMLU, MIA score)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    paths.append(_save(fig, out / "final_scores.png"))
    plt.close(fig)
    rel = relearn_plot(run_dir, colors)
    return paths + ([rel] if rel else [])


def relearn_plot(run_dir: Path, colors: dict[str, str]) -> Path | None:
    """``relearn.png``: the relearning recovery ratio of V's knowledge and regurgitation against the
    fine-tuning steps on T, per method (mean over seeds ± std; full fine-tuning solid, LoRA dashed);
    None when no relearning attack ran."""
    from lumebench.report.robustness import attack_results, recovery_curve

    results = {label: [s["relearn"] for s in seeds if "relearn" in s] for label, seeds in attack_results(run_dir).items()}
    results = {k: v for k, v in results.items() if v}
    if not results:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, measure in zip(axes, ("knowledge", "regurgitation")):
        for i, (label, seeds) in enumerate(results.items()):
            color = colors.get(label, f"C{i % 10}")
            for mode, style in (("full", "-"), ("lora", "--")):
                by_k: dict[int, list[float]] = {}
                for r in seeds:
                    for k, v in recovery_curve(r, measure, mode):
                        by_k.setdefault(k, []).append(v)
                if not by_k:
                    continue
                ks = sorted(by_k)
                ys = [statistics.fmean(by_k[k]) for k in ks]
                sd = [statistics.stdev(by_k[k]) if len(by_k[k]) > 1 else 0.0 for k in ks]
                ax.plot(ks, ys, style, marker="o", markersize=3, color=color, label=f"{label} ({mode})")
                if any(sd):
                    ax.fill_between(ks, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)],
                                    color=color, alpha=0.12)
        ax.axhline(0.0, color="grey", linewidth=1)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("fine-tuning steps on T")
        ax.set_title(f"V {measure} recovered: (V_attacked − V_unlearned) / (V_target − V_unlearned)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recovery ratio (1 = back to the target)")
    _legend(fig, axes)
    fig.subplots_adjust(bottom=0.28)
    path = _save(fig, run_dir / "plots" / "relearn.png")
    plt.close(fig)
    return path
