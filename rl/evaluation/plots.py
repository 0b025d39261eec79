"""Figures of evaluation results (PNG, matplotlib's Agg backend).

* :func:`plot_curves` — held-out cases: each method's fresh score against the load runs it used;
* :func:`plot_learning_curves` — the sweep's trials: training metrics per iteration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rl.evaluation.tables import method_order, search_budget
from rl.sweep import RANK_METRIC

if TYPE_CHECKING:
    from rl.evaluation.heldout import MethodResult


def plot_curves(panels: list[tuple[str, list[dict[str, MethodResult]]]], path: Path) -> None:
    """PNG, one panel per scenario: fresh score of each method's incumbent against load runs
    used (median over cases), with the fixed configurations and the oracle as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.6 * rows),
                             constrained_layout=True, squeeze=False)
    for ax, (title, results) in zip(axes.flat, panels, strict=False):
        _plot_panel(ax, results, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def value_at(curve: list[tuple[int, float]], x: int) -> float:
    """The curve's value after ``x`` load runs: its last point at or before ``x`` (an episode
    that ended early leaves its final configuration in place)."""
    return [y for xi, y in curve if xi <= x][-1]


def _plot_panel(ax: Any, results: list[dict[str, MethodResult]], title: str) -> None:
    styles = {"reinforce": "C0", "reinforce_sampled": "C9", "ppo": "C1", "random_actions": "C7",
              "random": "C2", "tpe": "C3"}
    names = method_order(list(results[0]))
    for name in names:
        curve_name = name
        if search_budget(name) is not None:
            curve_name = name.rsplit("_", 1)[0]
            if any(search_budget(m) and m.startswith(curve_name + "_")
                   and search_budget(m) > search_budget(name) for m in names):
                continue  # one curve per search: its longest run
        curves = [r[name].curve for r in results]
        if not all(curves):
            continue
        xs = sorted({x for c in curves for x, _ in c})
        ys = [float(np.median([value_at(c, x) for c in curves])) for x in xs]
        label = {"random": "random search", "tpe": "Optuna TPE"}.get(curve_name, curve_name)
        ax.plot(xs, ys, marker=".", label=label, color=styles.get(curve_name))
    for name, style in (("istio_default", ":"), ("initial", "-."), ("oracle", "--")):
        ax.axhline(float(np.median([r[name].score for r in results])), color="k",
                   linestyle=style, linewidth=1, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("load runs used (log scale)")
    ax.set_ylabel("fresh eval score (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")


def plot_learning_curves(result_grid: Any, path: Path) -> None:
    """PNG per trial and iteration, over the training episodes: the mean per-step evaluation
    score, good % and mean p99 (what users felt), one line per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(RANK_METRIC, "mean per-step evaluation score (good % − 100)"),
              ("env_runners/good_pct_mean", "good % (served within SLO)"),
              ("env_runners/latency_p99_ms_mean", "p99 of all requests (ms)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), constrained_layout=True)
    for result in result_grid:
        df = result.metrics_dataframe
        if df is None or "training_iteration" not in df:
            continue
        config = result.config or {}
        label = (f"lr={config.get('lr', float('nan')):.1e} "
                 f"late_w={config.get('env_config', {}).get('late_weight')}")
        for ax, (key, _) in zip(axes, panels, strict=True):
            if key in df:
                ax.plot(df["training_iteration"], df[key], marker=".", label=label)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_xlabel("training iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
