"""Markdown tables of evaluation results.

* the held-out cases (``experiments/evaluate.py``): :func:`scenario_section` (with
  :func:`scenario_table` and :func:`action_summary`), :func:`method_order`;
* the sweep (``experiments/pg_sweep.py``): :func:`trials_markdown` (its trials, best first;
  its held-out test is :mod:`rl.evaluation.scenario_eval`'s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.measure import FAILED_RUN_SCORE
from rl.evaluation.stats import quartiles
from rl.sweep import RANK_LAST_N

if TYPE_CHECKING:
    from rl.evaluation.cases import Case, Scenario
    from rl.evaluation.heldout import MethodResult


METHOD_ORDER = ("reinforce", "reinforce_sampled", "ppo", "random_actions", "initial",
                "istio_default")


def search_budget(name: str) -> int | None:
    """The load-run budget of a search method's name (``tpe_201`` → 201), None otherwise."""
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if name.startswith(("random_", "tpe_")) and tail.isdigit() else None


def method_order(names: Sequence[str]) -> list[str]:
    """Methods in table order: the agents, the fixed configurations, searches, the oracle."""
    first = [m for m in METHOD_ORDER if m in names]
    searches = sorted((m for m in names if search_budget(m) is not None),
                      key=lambda m: (int(m.rsplit("_", 1)[1]), m))
    return first + searches + (["oracle"] if "oracle" in names else [])


def fmt_quartiles(values: list[float], spec: str) -> str:
    """``median [p25, p75]`` of ``values`` formatted with ``spec``; "—" if there are none."""
    q = quartiles(values)
    if q is None:
        return "—"
    return f"{format(q[0], spec)} [{format(q[1], spec)}, {format(q[2], spec)}]"


def summary_rows(results: list[dict[str, MethodResult]]) -> list[dict[str, Any]]:
    """Per method over the cases: quartiles of score, goodput (req/s served within their SLO),
    failure %, mean latency and p99 (ms), gap closed, and how often the REINFORCE policy scored
    higher (fresh means)."""
    rows = []
    for name in method_order(list(results[0])):
        per = [r[name] for r in results]
        gaps = [p.gap_closed for p in per if p.gap_closed is not None]
        beats = None
        if "reinforce" in results[0] and name != "reinforce":
            beats = sum(r["reinforce"].score > r[name].score for r in results)
        rows.append({
            "method": name,
            "load_runs": int(np.median([p.load_runs for p in per])),
            "score": [p.score for p in per],
            "goodput_rps": [p.goodput_rps for p in per if p.goodput_rps is not None],
            "failure_pct": [p.failure_pct for p in per if p.failure_pct is not None],
            "mean_ms": [p.latency_mean_ms for p in per if p.latency_mean_ms is not None],
            "p99_ms": [p.p99_ms for p in per if p.p99_ms is not None],
            "gap_closed": gaps,
            "reinforce_better": beats,
            "unhealthy_ends": sum(not p.healthy_end for p in per),
            "failed_runs": sum(p.failed_runs for p in per),
        })
    return rows


def scenario_table(results: list[dict[str, MethodResult]]) -> str:
    """Markdown table of one scenario (median [p25, p75] over its cases)."""
    n = len(results)
    n_gap = sum(r["oracle"].gap_closed is not None for r in results)
    lines = [
        "| method | load runs per case | eval score | goodput req/s | failure % | mean ms "
        f"| p99 ms | gap closed ({n_gap}/{n} cases with a gap) | REINFORCE better in |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary_rows(results):
        beats = "—" if row["reinforce_better"] is None else f"{row['reinforce_better']}/{n}"
        notes = [f"{row['unhealthy_ends']} unhealthy ends"] if row["unhealthy_ends"] else []
        if row["failed_runs"]:
            notes.append(f"{row['failed_runs']} fresh runs failed, scored {FAILED_RUN_SCORE:.0f}")
        unhealthy = f" ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"| {row['method']}{unhealthy} | {row['load_runs']} "
            f"| {fmt_quartiles(row['score'], '.0f')} "
            f"| {fmt_quartiles(row['goodput_rps'], '.1f')} "
            f"| {fmt_quartiles(row['failure_pct'], '.2f')} "
            f"| {fmt_quartiles(row['mean_ms'], '.0f')} "
            f"| {fmt_quartiles(row['p99_ms'], '.0f')} "
            f"| {fmt_quartiles(row['gap_closed'], '.2f')} | {beats} |")
    return "\n".join(lines)


def action_summary(results: list[dict[str, MethodResult]], method: str,
                   describe: Callable[[int], str]) -> str:
    """How varied a policy's actions were over all cases: distinct actions, the most frequent
    one and its share."""
    taken = [a for r in results for a in r[method].actions]
    if not taken:
        return f"{method}: no actions"
    values, counts = np.unique(taken, return_counts=True)
    top = int(np.argmax(counts))
    return (f"{method}: {len(values)} distinct actions in {len(taken)} steps; most frequent "
            f"`{describe(int(values[top]))}` ({100.0 * counts[top] / len(taken):.0f} %)")


def scenario_section(scenario: Scenario, cases: list[Case],
                     results: list[dict[str, MethodResult]],
                     describe: Callable[[int], str]) -> list[str]:
    """Lines of one scenario in ``results.md``: its title and case seeds, its table and the
    policies' :func:`action_summary`."""
    seeds = ", ".join(str(c.seed) for c in cases)
    policies = [m for m in ("reinforce", "reinforce_sampled", "ppo") if m in results[0]]
    return [f"**{scenario.name}** — {scenario.description}; held-out case seeds {seeds}",
            "", scenario_table(results), "",
            "Actions: " + "; ".join(action_summary(results, m, describe)
                                    for m in policies) + ".", ""]


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; "—" if there is none (a trial that reported nothing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    """The trials as a Markdown table, in the order of ``rows``: the ranking scores beside what
    users felt in the last training episodes (good %, goodput req/s, failure %, mean and p99
    latency in ms; a row without ``goodput_rps`` / ``mean_ms`` shows "—" there)."""
    lines = [
        f"| rank | trial | lr | late weight | iters | training score (last {RANK_LAST_N} it.) "
        "| validation score | good % | goodput req/s | failure % | mean ms | p99 ms "
        "| unhealthy ends | error |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['trial']} | {fmt(r['lr'], '.2e')} | {fmt(r['late_weight'], 'g')} "
            f"| {r['iterations']} | {fmt(r['train_score'], '+.2f')} "
            f"| {fmt(r['validation_score'], '+.2f')} | {fmt(r['good_pct'], '.1f')} "
            f"| {fmt(r.get('goodput_rps'), '.1f')} | {fmt(r['failure_pct'], '.2f')} "
            f"| {fmt(r.get('mean_ms'), '.0f')} | {fmt(r['p99_ms'], '.0f')} "
            f"| {fmt(r['unhealthy_end'], '.2f')} | {r['error'][:60]} |")
    return "\n".join(lines)
