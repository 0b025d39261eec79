"""Markdown tables of the held-out scenario evaluation (``experiments/evaluate.py``) and of the
static tuning (``experiments/tune_static.py``): every score shown beside what users got (good %,
goodput, failure %, mean latency, p99), each a mean with its 95 % bootstrap interval over cases
(or load seeds), and the policy's win rate against each baseline.

* :func:`mean_ci` / :func:`fmt_ci` — a mean and its interval, as numbers and as a cell;
* :func:`wilson_ci95` — the interval of a share (win rates);
* :func:`method_rows` / :func:`methods_table` — per method over the cases;
* :func:`win_rates` / :func:`win_table` — the policy against each baseline, case by case;
* :func:`steady_check` / :func:`steady_table` — the policy against the best static
  configuration on the steady (fault-free, constant-rate) parts of the scenarios.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rl.evaluation.stats import bootstrap_ci95

if TYPE_CHECKING:
    from rl.evaluation.closed_loop import ScenarioRun

#: The per-step metrics of a run the tables show beside the score: (key, header, format).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("good_pct", "good %", ".2f"),
    ("goodput_rps", "goodput req/s", ".1f"),
    ("failure_pct", "failure %", ".2f"),
    ("latency_mean_ms", "mean ms", ".0f"),
    ("latency_p99_ms", "p99 ms", ".0f"),
)


def mean_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values``: the 95 % percentile-bootstrap interval of the mean
    (NaN bounds with fewer than two values; all NaN with none)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)],
                     dtype=np.float64)
    if len(arr) == 0:
        return math.nan, math.nan, math.nan
    low, high = bootstrap_ci95(arr, seed)
    return float(arr.mean()), low, high


def fmt_ci(values: Sequence[float], spec: str) -> str:
    """``mean [low, high]`` of ``values`` formatted with ``spec`` ("—" with no values; the
    mean alone with one)."""
    mean, low, high = mean_ci(values)
    if math.isnan(mean):
        return "—"
    if math.isnan(low):
        return format(mean, spec)
    return f"{format(mean, spec)} [{format(low, spec)}, {format(high, spec)}]"


def wilson_ci95(successes: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a share ``successes / n`` (ties may count half)."""
    if n <= 0:
        return math.nan, math.nan
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def method_rows(runs: Mapping[str, Sequence[ScenarioRun]]) -> list[dict[str, Any]]:
    """Per method (in the given order) over its cases: the episodes' summed and per-step mean
    score and each of :data:`METRICS` (per case: the mean over the case's healthy steps), as
    lists over cases, and how many episodes ended unhealthy."""
    rows = []
    for name, per_case in runs.items():
        row: dict[str, Any] = {"method": name,
                               "summed": [r.summed_score for r in per_case],
                               "mean": [r.mean_score for r in per_case],
                               "unhealthy": sum(not r.healthy_end for r in per_case)}
        for key, _, _ in METRICS:
            row[key] = [r.metric_mean(key) for r in per_case]
        rows.append(row)
    return rows


def methods_table(runs: Mapping[str, Sequence[ScenarioRun]]) -> str:
    """Markdown: per method, summed and per-step score and what users got, mean [95 % CI]
    over cases."""
    head = "| method | summed score | score per step | " + " | ".join(
        h for _, h, _ in METRICS) + " | unhealthy ends |"
    lines = [head, "|---|" + "---:|" * (3 + len(METRICS))]
    for row in method_rows(runs):
        cells = [fmt_ci(row["summed"], ".1f"), fmt_ci(row["mean"], ".2f")]
        cells += [fmt_ci(row[key], spec) for key, _, spec in METRICS]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['unhealthy']} |")
    return "\n".join(lines)


def win_rates(runs: Mapping[str, Sequence[ScenarioRun]], policy: str) -> dict[str, dict[str, Any]]:
    """The ``policy``'s win rate against every other method: the share of cases where its
    episode's summed score is higher (a tie counts half), with its 95 % Wilson interval, and the
    mean per-case difference of summed scores with its bootstrap interval."""
    ours = runs[policy]
    out = {}
    for name, theirs in runs.items():
        if name == policy:
            continue
        diffs = [a.summed_score - b.summed_score for a, b in zip(ours, theirs, strict=True)]
        wins = sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in diffs)
        low, high = wilson_ci95(wins, len(diffs))
        mean, dlow, dhigh = mean_ci(diffs)
        out[name] = {"wins": wins, "n": len(diffs), "rate": wins / len(diffs) if diffs else
                     math.nan, "ci95": (low, high), "diff_mean": mean,
                     "diff_ci95": (dlow, dhigh)}
    return out


def win_table(rates: Mapping[str, Mapping[str, Any]], policy: str) -> str:
    """Markdown: the policy's win rate against each baseline."""
    lines = [f"| {policy} against | wins / cases | win rate [95 % CI] "
             "| summed-score difference [95 % CI] |", "|---|---:|---:|---:|"]
    for name, r in rates.items():
        low, high = r["ci95"]
        dm, (dl, dh) = r["diff_mean"], r["diff_ci95"]
        diff = "—" if math.isnan(dm) else (f"{dm:+.1f}" if math.isnan(dl)
                                           else f"{dm:+.1f} [{dl:+.1f}, {dh:+.1f}]")
        lines.append(f"| {name} | {r['wins']:g} / {r['n']} | {r['rate']:.0%} "
                     f"[{low:.0%}, {high:.0%}] | {diff} |")
    return "\n".join(lines)


def steady_check(runs: Mapping[str, Sequence[ScenarioRun]], policy: str,
                 statics: Sequence[str]) -> dict[str, Any]:
    """The policy against the best static configuration on the steady parts of the cases: the
    steps with no fault active whose rate equals the previous step's (the load did not move),
    after the first ``STEADY_WARMUP`` steps. Per case the mean score over those steps; the best
    static is the static method with the highest mean over cases. Returns the per-case means,
    the best static's name, the relative shortfall of the policy (in % of the best static's
    distance to a perfect score 0: ``100 · (best - policy) / |best|``) and, per method and
    :data:`METRICS` key, the per-case mean of that metric over the same steps
    (``per_case_metrics``; NaN where a step did not report it)."""
    def step_means(name: str, key: str) -> list[float]:
        out = []
        for r in runs[name]:
            values = [getattr(r.steps[t], key) for t in r.steady_steps()]
            values = [float(v) for v in values if v is not None]
            out.append(float(np.mean(values)) if values else math.nan)
        return out

    names = [name for name in (policy, *statics) if name in runs]
    per = {name: step_means(name, "score") for name in names}
    usable = [i for i in range(len(per[policy]))
              if all(not math.isnan(v[i]) for v in per.values())]
    means = {name: float(np.mean([v[i] for i in usable])) if usable else math.nan
             for name, v in per.items()}
    candidates = [s for s in statics if s in means]
    best = max(candidates, key=lambda s: means[s]) if candidates and usable else None
    shortfall = math.nan
    if best is not None and means[best] != 0:
        shortfall = 100.0 * (means[best] - means[policy]) / abs(means[best])
    metrics: dict[str, dict[str, list[float]]] = {}
    for name in names:
        metrics[name] = {}
        for key, _, _ in METRICS:
            values = step_means(name, key)
            metrics[name][key] = [values[i] for i in usable]
    return {"cases": len(usable), "means": means, "best_static": best,
            "per_case": {name: [v[i] for i in usable] for name, v in per.items()},
            "per_case_metrics": metrics, "shortfall_pct": shortfall}


def steady_table(check: Mapping[str, Any], policy: str) -> str:
    """Markdown: mean score per step on the steady parts, the policy and each static method,
    beside good %, goodput, failure %, mean latency and p99 over the same steps."""
    lines = [f"Steady parts of {check['cases']} cases (no fault, rate unchanged from the step "
             "before): mean per step [95 % CI over cases] of the score and of what users got.",
             "", "| method | steady score per step | "
             + " | ".join(header for _, header, _ in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for name, values in check["per_case"].items():
        mark = " (best static)" if name == check["best_static"] else ""
        metrics = check["per_case_metrics"][name]
        cells = " | ".join(fmt_ci(metrics[key], spec) for key, _, spec in METRICS)
        lines.append(f"| {name}{mark} | {fmt_ci(values, '.2f')} | {cells} |")
    if check["best_static"] is not None and not math.isnan(check["shortfall_pct"]):
        lines += ["", f"{policy} is {check['shortfall_pct']:+.1f} % worse than the best static "
                  f"configuration ({check['best_static']}) on the steady parts (target ≤ 5 %; "
                  "negative: better)."]
    return "\n".join(lines)
