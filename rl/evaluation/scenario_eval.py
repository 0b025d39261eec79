"""The held-out scenario evaluation: every method through the same held-out scenarios, seeds and
observation (``experiments/evaluate.py``'s default).

* :func:`held_out_plan` — the cases: :func:`envs.scenarios.held_out_cases` with their case
  seeds (load seeds and ``classic_random`` starts; never used in training);
* :func:`standard_methods` — the trained policy and the baselines it must beat;
* :func:`evaluate_methods` — every controller through every case
  (:func:`rl.evaluation.closed_loop.run_scenario`, common random numbers) on one simulator, or
  each method on a backend of its own (:func:`fresh_local_replica`: a fresh local replica);
* :func:`report_markdown` / :func:`results_json` — the tables and the data;
* :func:`compare_held_out` — all of the above for a trained policy (evaluate.py, pg_sweep);
* :func:`plot_fault_case` — the per-step score of every method through one fault scenario.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.actions import ActionCatalogue
from envs.backends import make_backend
from envs.backends.base import Backend
from envs.scenarios import Scenario, held_out_cases
from rl.controllers import (
    TUNED_RULE_PARAMS,
    Controller,
    GatewayThrottle,
    KeepStart,
    PolicyController,
    RuleBasedController,
    istio_defaults,
    tuned_static,
)
from rl.evaluation.closed_loop import ScenarioRun, run_scenario
from rl.evaluation.scenario_tables import (
    methods_table,
    steady_check,
    steady_table,
    win_rates,
    win_table,
)

#: Case ``i`` plays with case seed ``CASE_SEED_BASE + i`` (its load seeds and random start),
#: away from pg_sweep's training (``--seed`` + runner), validation (2 000 000+) and test
#: (1 000 000+) seeds and from the classic evaluation's (3 000 000+).
CASE_SEED_BASE = 4_000_000
#: The seed of :func:`envs.scenarios.held_out_cases` (which scenarios the cases are).
SCENARIO_SEED = 12
#: The methods that deploy one configuration unchanged (the steady-state check's "static").
STATIC_METHODS = ("istio_default", "tpe_201", "gateway_throttle")


def held_out_plan(n: int, episode_len: int, scenario_seed: int = SCENARIO_SEED
                  ) -> list[tuple[Scenario, int]]:
    """``n`` held-out cases of ``episode_len`` steps: (scenario, case seed)."""
    return [(s, CASE_SEED_BASE + i)
            for i, s in enumerate(held_out_cases(scenario_seed, n, episode_len))]


def standard_methods(module: Any, catalogue: ActionCatalogue
                     ) -> dict[str, Callable[[], Controller]]:
    """The methods every held-out comparison runs: the trained ``module`` acting greedily
    (``policy``), Istio's defaults, the TPE-201 static configuration, the tuned rule-based
    controller, the gateway throttle, and the scenario's start kept unchanged (``keep_start``:
    where the policy starts, without its actions) (:mod:`rl.controllers`), as controller
    factories.

    Raises:
        ValueError: the shipped TPE-201 configuration cannot be read.
    """
    tuned = tuned_static()
    return {
        "policy": lambda: PolicyController(module, catalogue),
        "istio_default": istio_defaults,
        "tpe_201": lambda: tuned,
        "rule_based": lambda: RuleBasedController(TUNED_RULE_PARAMS, catalogue),
        "gateway_throttle": GatewayThrottle,
        "keep_start": KeepStart,
    }


def fresh_local_replica(controller: Controller, replica: int) -> Backend:
    """A local replica started for ``controller`` (``LocalMesh(replica, start=True)`` with its
    ``backend_kwargs()``, e.g. Envoy's adaptive concurrency filter; none for the others): each
    method on a replica of its own, from a fresh start. The caller closes it (which stops it).

    Raises:
        envs.backends.base.BackendError: the replica is already up or did not start.
    """
    from envs.backends.local import LocalMesh

    kwargs = getattr(controller, "backend_kwargs", None)
    return LocalMesh(replica=replica, start=True, **(kwargs() if kwargs is not None else {}))


def evaluate_methods(plan: Sequence[tuple[Scenario, int]],
                     methods: Mapping[str, Callable[[], Controller]], step_s: float,
                     episode_len: int, catalogue: ActionCatalogue,
                     log: Callable[[str], None] = print, *,
                     backend_for: Callable[[Controller], Backend] | None = None
                     ) -> dict[str, list[ScenarioRun]]:
    """Every method (a factory of a fresh controller, one per case) through every case; per
    method its runs in case order. Prints one line per method and case.

    ``backend_for`` None: one simulator for every method, method after method (the simulator
    keeps nothing from one run to the next and its runs do not depend on the machine, so the
    order does not matter). Otherwise the runs are interleaved, so that a machine whose load
    drifts (a shared host) does not favour the methods that ran while it was quiet: case after
    case, every method on ``backend_for(controller)`` (e.g. a :func:`fresh_local_replica`
    started for it, closed after the case), in an order rotated by one method per case (case
    ``i`` starts with method ``i mod M``).
    """
    runs: dict[str, list[ScenarioRun]] = {name: [] for name in methods}

    def play(name: str, backend: Backend, controller: Controller, scenario: Scenario,
             seed: int) -> None:
        t0 = time.monotonic()
        run = run_scenario(backend, scenario, controller, seed, step_s, episode_len, catalogue)
        run.controller = name
        runs[name].append(run)
        log(f"[evaluate] {name} on {scenario.name} (seed {seed}): "
            f"{run.summed_score:.0f} ({time.monotonic() - t0:.1f} s)")

    if backend_for is None:
        shared = make_backend("sim")
        try:
            for name, make in methods.items():
                for scenario, seed in plan:
                    play(name, shared, make(), scenario, seed)
        finally:
            shared.close()
        return runs
    names = list(methods)
    for i, (scenario, seed) in enumerate(plan):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            controller = methods[name]()
            backend = backend_for(controller)
            try:
                play(name, backend, controller, scenario, seed)
            finally:
                backend.close()
    return runs


def compare_held_out(module: Any, catalogue: ActionCatalogue,
                     plan: Sequence[tuple[Scenario, int]], step_s: float, episode_len: int,
                     output: Path, log: Callable[[str], None] = print
                     ) -> tuple[dict[str, list[ScenarioRun]], list[str], dict[str, Any]]:
    """The held-out comparison of ``experiments/evaluate.py`` and of pg_sweep's test: the
    policy ``module`` and the baselines (:func:`standard_methods`) through ``plan``, then (with
    at least 2 cases) the policy again shown the next case's observations
    (:mod:`rl.evaluation.ablation`); writes ``output / "cause_action.png"`` (its actions by
    observed cause, :mod:`rl.evaluation.cause_action`) and ``output / "fault_case.png"`` when a
    case has a fault. Returns the runs, the markdown lines (tables, the policy's actions, the
    cause table, the ablation, the plots) and the numbers (win rates, steady check, the
    policy's actions, ``cause_action``, ``shuffled_observation``, every case step by step)."""
    from rl.evaluation.ablation import gain_lost, run_shuffled
    from rl.evaluation.cause_action import (
        cause_action_counts,
        cause_action_markdown,
        plot_cause_action,
    )

    runs = evaluate_methods(plan, standard_methods(module, catalogue), step_s, episode_len,
                            catalogue, log=log)
    md, numbers = report_markdown(runs, "policy", plan)
    actions = action_summary(runs["policy"], catalogue.describe)
    md += ["", f"Policy actions: {actions['distinct']} distinct in {actions['steps']} steps; "
           f"most frequent `{actions['most_frequent']}`"
           + (f" ({actions['share']:.0%})." if actions["share"] is not None else ".")]
    causes = cause_action_counts(runs["policy"], catalogue, episode_len)
    plot_cause_action(causes, output / "cause_action.png")
    md += ["", "The policy's actions by the cause it observed (`rl.evaluation.cause_action`; "
           f"heat map `{output / 'cause_action.png'}`):", "", *cause_action_markdown(causes)]
    ablation: dict[str, float] | None = None
    if len(plan) >= 2:
        shuffled = run_shuffled(module, catalogue, plan, runs["policy"], step_s, episode_len)
        ablation = gain_lost(runs["policy"], shuffled, runs["istio_default"])
        md += ["", "Observation shuffled across episodes (each case shown the next case's "
               "observations, `rl.evaluation.ablation`): mean summed-score gain over Istio's "
               f"defaults {ablation['gain']:+.1f} with its own observations, "
               f"{ablation['shuffled_gain']:+.1f} shuffled; share of the gain lost "
               + ("n/a (no gain to lose)." if np.isnan(ablation["share_lost"])
                  else f"{ablation['share_lost']:.0%}.")]
    index = fault_case(plan)
    if index is not None:
        plot_fault_case(runs, index, plan[index][0], output / "fault_case.png")
        md += ["", f"Per-step score of every method through {plan[index][0].name}: "
               f"`{output / 'fault_case.png'}`."]
    return runs, md, {**numbers, "policy_actions": actions, "shuffled_observation": ablation,
                      "cause_action": causes,
                      **results_json(runs, plan)}


def action_summary(runs: Sequence[ScenarioRun], describe: Callable[[int], str]) -> dict[str, Any]:
    """How varied a policy's actions were: distinct actions, the most frequent and its share."""
    taken = [s.action for r in runs for s in r.steps if s.action is not None]
    if not taken:
        return {"steps": 0, "distinct": 0, "most_frequent": None, "share": None}
    values, counts = np.unique(taken, return_counts=True)
    top = int(np.argmax(counts))
    return {"steps": len(taken), "distinct": len(values),
            "most_frequent": describe(int(values[top])),
            "share": float(counts[top] / len(taken))}


def fault_case(plan: Sequence[tuple[Scenario, int]]) -> int | None:
    """Index of the first case with a fault (None if none)."""
    return next((i for i, (s, _) in enumerate(plan) if s.faults), None)


def plot_fault_case(runs: Mapping[str, Sequence[ScenarioRun]], index: int, scenario: Scenario,
                    path: Any) -> None:
    """PNG: the per-step evaluation score of every method through case ``index`` (a fault
    scenario), the fault window shaded and the offered rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for name, per_case in runs.items():
        steps = per_case[index].steps
        ax.plot([s.t for s in steps], [s.score for s in steps], marker=".", label=name)
    for f in scenario.faults:
        ax.axvspan(f.start_step - 0.5, f.end_step - 0.5, color="red", alpha=0.1,
                   label=f.describe())
    rate = ax.twinx()
    rate.plot(range(len(scenario.rates)), scenario.rates, color="grey", linestyle=":",
              label="offered req/s")
    rate.set_ylabel("offered req/s", color="grey")
    ax.set_xlabel("run (0 = reset)")
    ax.set_ylabel("evaluation score (good % − 100)")
    ax.set_title(scenario.name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report_markdown(runs: Mapping[str, Sequence[ScenarioRun]], policy: str,
                    plan: Sequence[tuple[Scenario, int]]) -> tuple[list[str], dict[str, Any]]:
    """The tables (lines of markdown) and their numbers: per method over cases, the policy's
    win rates, the steady-state check, and each case's summed scores."""
    rates = win_rates(runs, policy)
    steady = steady_check(runs, policy, [m for m in STATIC_METHODS if m in runs])
    names = list(runs)
    md = ["Per method over the cases, mean [95 % bootstrap CI over cases]: the episode's summed "
          "evaluation score (steps 1..T; good % − 100 per step, an unhealthy step and every "
          "later one -100), its per-step mean, and per case the mean over its healthy steps of "
          "good %, goodput, failure %, mean latency and p99.", "", methods_table(runs), "",
          f"Win rate of {policy}: the share of cases where its episode's summed score is higher "
          "(ties count half; 95 % Wilson interval), and the mean per-case difference.", "",
          win_table(rates, policy), "", steady_table(steady, policy), "",
          "Summed score per case:", "",
          "| case | seed | " + " | ".join(names) + " |",
          "|---|---:|" + "---:|" * len(names)]
    for i, (scenario, seed) in enumerate(plan):
        md.append(f"| {scenario.name} | {seed} | "
                  + " | ".join(f"{runs[n][i].summed_score:.1f}" for n in names) + " |")
    return md, {"win_rates": rates, "steady": steady}


def results_json(runs: Mapping[str, Sequence[ScenarioRun]],
                 plan: Sequence[tuple[Scenario, int]]) -> dict[str, Any]:
    """Every case (scenario as data, seed) and every method's run, step by step."""
    return {"cases": [{"scenario": s.to_dict(), "seed": seed,
                       "runs": {name: runs[name][i].to_dict() for name in runs}}
                      for i, (s, seed) in enumerate(plan)]}


__all__ = ["CASE_SEED_BASE", "SCENARIO_SEED", "STATIC_METHODS", "action_summary",
           "compare_held_out", "evaluate_methods", "fault_case", "fresh_local_replica",
           "held_out_plan", "plot_fault_case", "report_markdown", "results_json",
           "standard_methods"]
