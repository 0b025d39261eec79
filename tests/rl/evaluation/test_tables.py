"""Tables and figures of evaluation results (rl/evaluation/tables.py, plots.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rl.evaluation.heldout import MethodResult
from rl.evaluation.plots import plot_curves, value_at
from rl.evaluation.tables import method_order, scenario_table, search_budget


def test_method_order_and_budget_names() -> None:
    names = ["oracle", "tpe_201", "random_actions", "random_21", "initial", "reinforce",
             "tpe_21", "random_201", "istio_default", "ppo", "reinforce_sampled"]
    assert method_order(names) == ["reinforce", "reinforce_sampled", "ppo", "random_actions",
                                      "initial",
                                      "istio_default", "random_21", "tpe_21", "random_201",
                                      "tpe_201", "oracle"]
    assert search_budget("tpe_201") == 201
    assert search_budget("random_actions") is None


def _result(score: float, curve: list[tuple[int, float]], healthy: bool = True,
            gap: float | None = None) -> Any:
    return MethodResult(score=score, failure_pct=1.0, p99_ms=300.0, gap_closed=gap,
                           load_runs=curve[-1][0] if curve else 0, healthy_end=healthy,
                           curve=curve, goodput_rps=60.0, latency_mean_ms=90.0)


def test_tables_and_plot_handle_episodes_that_ended_early(tmp_path: Path) -> None:
    full = [(1, -500.0), (2, -480.0), (21, -450.0)]
    short = [(1, -600.0), (2, -900.0)]  # terminated (unhealthy) after one step
    results = [
        {"reinforce": _result(-450.0, full, gap=0.5), "initial": _result(-500.0, [], gap=0.0),
         "istio_default": _result(-470.0, []), "oracle": _result(-400.0, [], gap=1.0)},
        {"reinforce": _result(-900.0, short, healthy=False, gap=-3.0),
         "initial": _result(-600.0, [], gap=0.0), "istio_default": _result(-470.0, []),
         "oracle": _result(-500.0, [], gap=1.0)},
    ]
    assert value_at(short, 21) == -900.0 and value_at(full, 5) == -480.0
    table = scenario_table(results)
    assert "| reinforce (1 unhealthy ends) | 11 |" in table  # median of 21 and 2 runs
    assert "| initial | 0 | -550 [-575, -525] |" in table
    # score, goodput, failure %, mean and p99 latency; REINFORCE beat the defaults once in two
    assert ("| istio_default | 0 | -470 [-470, -470] | 60.0 [60.0, 60.0] | 1.00 [1.00, 1.00] "
            "| 90 [90, 90] | 300 [300, 300] | — | 1/2 |") in table
    no_goodput = [{k: MethodResult(score=-470.0, failure_pct=1.0, p99_ms=300.0)
                   for k in ("reinforce", "oracle")}]
    assert "| oracle | 0 | -470 [-470, -470] | — | 1.00 [1.00, 1.00] | — |" \
        in scenario_table(no_goodput)  # a run that measured no goodput shows a dash
    assert "gap closed (2/2 cases with a gap)" in table
    plot_curves([("a", results), ("b", results), ("c", results)], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 5_000
