"""Closed-loop transfer: the simulator-trained policy through held-out scenarios on the simulator
and on real Envoy, beside the baselines (``experiments/transfer.py``'s default).

Every method plays the same held-out cases (:func:`rl.evaluation.scenario_eval.held_out_plan`:
load steps, a diurnal curve, faults; the same case seeds, so the same load seeds on both
backends) through :func:`rl.evaluation.closed_loop.run_scenario`, once on the simulator and once
on the local mesh (real Envoy, Locust and Prometheus on 127.0.0.1; every episode on a freshly
started replica, :func:`rl.evaluation.scenario_eval.fresh_local_replica`, the methods
interleaved case by case in a rotating order, so that a drifting machine load does not favour
one method: :func:`rl.evaluation.scenario_eval.evaluate_methods`). Methods
(:func:`transfer_methods`): the policy (greedy), Istio's defaults, the TPE-201 static
configuration, the tuned rule-based controller, the gateway throttle, and Envoy's adaptive
concurrency filter — local only: the simulator does not model it and refuses it
(:func:`refusals`), so its simulator cells say so with the simulator's reason.

Targets (:func:`transfer_numbers`):

* **gain retained** — the policy's gain over Istio's defaults (summed episode score, policy −
  Istio, per case) on real Envoy over the same on the simulator, summed over cases (and per
  case): ≥ :data:`RETAINED_TARGET`. Undefined when the simulator gain is not above
  :data:`NEGLIGIBLE_GAIN_PER_STEP` points per step (nothing to retain): then the report says so
  instead of printing a ratio;
* **beats adaptive concurrency** — the policy's summed score above the filter's on local in ≥
  :data:`AC_WIN_TARGET` of the cases.

:func:`run_closed_loop` runs it all and writes ``results.json`` and ``traces.png`` (per-step
score of every method, every case, both backends) into the output directory and appends the
tables, with the command and date, to BENCHMARKS.md's ``## Transfer`` section.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from envs.actions import ActionCatalogue
from envs.backends.base import Backend, BackendError
from envs.scenarios import MIN_EPISODE_LEN, Scenario
from rl.controllers import TUNED_RULE_PARAMS, AdaptiveConcurrencyController, Controller
from rl.evaluation.benchmarks_md import (
    append_or_report,
    check_writable_dir,
    check_writable_file,
)
from rl.evaluation.checkpoint import DEFAULT_SWEEP_RESULTS, best_checkpoint, load_policy
from rl.evaluation.closed_loop import ScenarioRun
from rl.evaluation.scenario_eval import (
    SCENARIO_SEED,
    evaluate_methods,
    fresh_local_replica,
    held_out_plan,
    results_json,
    standard_methods,
)
from rl.evaluation.scenario_tables import METRICS, fmt_ci, methods_table, win_rates
from rl.evaluation.stats import BOOTSTRAP_RESAMPLES
from rl.evaluation.transfer import INTRO, SECTION, NotAppendedError, TransferError, listening_ports

#: Default run (~50 min on 2 shared cores, see experiments/transfer.py): the first 6 held-out
#: cases (a load step up at t2, a step down at t3, a diurnal curve, carts down from t2, carts
#: slowed t1-4, a step down at t4 with shipping slowed t2-4), generated with the held-out
#: minimum of 8 steps and played for their first 6 (every step and fault starts by then), of
#: 4 s of offered load each.
DEFAULT_CASES = 6
DEFAULT_EPISODE_LEN = 6
DEFAULT_STEP_S = 4.0
#: The local replica (ports 21000 + 200·K; 21: a block no test uses).
DEFAULT_REPLICA = 21
DEFAULT_OUTPUT = Path("results/transfer")
#: ``--quick``: the first case (the load step up at t2) for 3 steps, two methods.
QUICK_CASES = 1
QUICK_EPISODE_LEN = 3
QUICK_METHODS = ("policy", "istio_default")
POLICY = "policy"
BASELINE = "istio_default"
ADAPTIVE = "adaptive_concurrency"
#: The targets (issue 13, item 7).
RETAINED_TARGET = 0.6
AC_WIN_TARGET = 2 / 3
#: A simulator gain over Istio's defaults at or below this many points per step (summed score
#: per case: × episode_len) leaves nothing to retain: the ratio is undefined.
NEGLIGIBLE_GAIN_PER_STEP = 1.0
BACKENDS = ("sim", "local")


@dataclass(frozen=True)
class ClosedLoopSettings:
    """What one closed-loop transfer run does (``experiments/transfer.py``'s flags).

    Attributes:
        benchmarks: the BENCHMARKS.md to append to.
        output: directory of results.json and traces.png.
        checkpoint: REINFORCE Algorithm checkpoint (None: the best trial of ``sweep_results``).
        sweep_results: pg_sweep's ``results.json``.
        cases: held-out cases (the first ``cases`` of :func:`held_out_plan`).
        episode_len: steps played per case (after the reset run).
        step_s: seconds of offered load per run.
        replica: local mesh replica (started and stopped afresh for every episode).
        quick: policy and Istio's defaults only.
        scenario_seed: seed of :func:`envs.scenarios.held_out_cases`.
        no_append: do not append to ``benchmarks``.
    """

    benchmarks: Path
    output: Path = DEFAULT_OUTPUT
    checkpoint: Path | None = None
    sweep_results: Path = DEFAULT_SWEEP_RESULTS
    cases: int = DEFAULT_CASES
    episode_len: int = DEFAULT_EPISODE_LEN
    step_s: float = DEFAULT_STEP_S
    replica: int = DEFAULT_REPLICA
    quick: bool = False
    scenario_seed: int = SCENARIO_SEED
    no_append: bool = False


def transfer_plan(cases: int, episode_len: int, scenario_seed: int = SCENARIO_SEED
                  ) -> list[tuple[Scenario, int]]:
    """The first ``cases`` held-out cases, each generated with at least the held-out minimum of
    steps (``episode_len`` may be shorter: :func:`run_scenario` plays the first steps)."""
    return held_out_plan(cases, max(episode_len, MIN_EPISODE_LEN), scenario_seed)


def transfer_methods(module: Any, catalogue: ActionCatalogue, quick: bool = False
                     ) -> dict[str, Callable[[], Controller]]:
    """The methods compared: :func:`standard_methods` without ``keep_start`` (the default cases
    start at Istio's defaults, where it is ``istio_default`` again) plus Envoy's adaptive
    concurrency; ``quick``: :data:`QUICK_METHODS` only."""
    methods = {n: m for n, m in standard_methods(module, catalogue).items() if n != "keep_start"}
    methods[ADAPTIVE] = AdaptiveConcurrencyController
    if quick:
        methods = {n: methods[n] for n in QUICK_METHODS}
    return methods


def refusals(methods: Mapping[str, Callable[[], Controller]], backend: Backend
             ) -> dict[str, str]:
    """The methods whose controller's ``check_backend`` refuses ``backend``, with its reason."""
    out = {}
    for name, make in methods.items():
        check = getattr(make(), "check_backend", None)
        if check is None:
            continue
        try:
            check(backend)
        except ValueError as exc:
            out[name] = str(exc)
    return out


def _ratio(local: float, sim: float, threshold: float) -> float | None:
    return local / sim if sim > threshold else None


def retained_ci(sim_gains: Sequence[float], local_gains: Sequence[float], threshold: float,
                seed: int = 0) -> tuple[float, float, int]:
    """95 % percentile-bootstrap interval of Σ local gain / Σ sim gain, resampling cases
    (:data:`BOOTSTRAP_RESAMPLES`, seeded); resamples whose Σ sim gain is not above
    ``threshold`` have no ratio and are left out. Returns ``(low, high, left_out)``; NaN bounds
    with fewer than two cases or no usable resample."""
    sim, local = np.asarray(sim_gains, float), np.asarray(local_gains, float)
    if len(sim) < 2:
        return math.nan, math.nan, 0
    idx = np.random.default_rng(seed).integers(0, len(sim), (BOOTSTRAP_RESAMPLES, len(sim)))
    s, lo = sim[idx].sum(1), local[idx].sum(1)
    ok = s > threshold
    if not ok.any():
        return math.nan, math.nan, int((~ok).sum())
    low, high = np.percentile(lo[ok] / s[ok], [2.5, 97.5])
    return float(low), float(high), int((~ok).sum())


def transfer_numbers(runs: Mapping[str, Mapping[str, Sequence[ScenarioRun]]], episode_len: int
                     ) -> dict[str, Any]:
    """The targets' figures from ``runs[backend][method]`` (summed episode scores):

    * ``gains``: per backend, per case, policy − Istio's defaults;
    * ``retained``: Σ local gain / Σ sim gain (None when Σ sim gain ≤ the negligible
      threshold: :data:`NEGLIGIBLE_GAIN_PER_STEP` × episode_len × cases), its bootstrap interval
      over cases, and per case the same ratio (None where that case's sim gain is negligible);
    * ``vs_adaptive``: the policy against adaptive concurrency on local
      (:func:`rl.evaluation.scenario_tables.win_rates`), None if it did not run there.
    """
    gains = {b: [p.summed_score - i.summed_score
                 for p, i in zip(runs[b][POLICY], runs[b][BASELINE], strict=True)]
             for b in BACKENDS}
    per_case_threshold = NEGLIGIBLE_GAIN_PER_STEP * episode_len
    n = len(gains["sim"])
    total_sim, total_local = float(sum(gains["sim"])), float(sum(gains["local"]))
    threshold = per_case_threshold * n
    low, high, left_out = retained_ci(gains["sim"], gains["local"], threshold)
    retained = {
        "sim_total": total_sim, "local_total": total_local, "threshold_total": threshold,
        "ratio": _ratio(total_local, total_sim, threshold), "ci95": (low, high),
        "ci_resamples_left_out": left_out, "target": RETAINED_TARGET,
        "per_case": [_ratio(lg, sg, per_case_threshold)
                     for sg, lg in zip(gains["sim"], gains["local"], strict=True)],
        "per_case_threshold": per_case_threshold}
    vs = None
    if ADAPTIVE in runs["local"]:
        vs = win_rates({POLICY: runs["local"][POLICY], ADAPTIVE: runs["local"][ADAPTIVE]},
                       POLICY)[ADAPTIVE]
        vs["target"] = AC_WIN_TARGET
    return {"gains": gains, "retained": retained, "vs_adaptive": vs}


def reset_check(runs: Mapping[str, Sequence[ScenarioRun]]) -> dict[str, list[float]]:
    """The reset runs (run 0) of the methods that play the scenario's start unchanged there
    (no configuration change before run 0: Istio's defaults, the policy, the rule-based
    controller, adaptive concurrency on the default cases): per method, its run-0 scores in case
    order. Same configuration, same load seed: on the simulator they are equal; on the local
    mesh their spread is its run-to-run noise plus any drift between the methods' time slots
    (e.g. other jobs' CPU load), which every later step of that method shares."""
    return {name: [r.steps[0].score for r in per_case] for name, per_case in runs.items()
            if all(not r.steps[0].change for r in per_case)}


def reset_check_markdown(runs: Mapping[str, Mapping[str, Sequence[ScenarioRun]]]) -> list[str]:
    """Markdown lines: :func:`reset_check` per backend, the mean run-0 score per method."""
    checks = {b: reset_check(runs[b]) for b in BACKENDS}
    names = list(checks["local"])
    lines = ["Reset-run check (`reset_check`): run 0 plays the same configuration with the same "
             "load seed for these methods, so a difference between them is backend noise or "
             "drift between the methods' time slots, not the method. Mean run-0 score [95 % CI "
             "over cases]:", "", "| backend | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for backend, check in checks.items():
        lines.append(f"| {backend} | " + " | ".join(
            fmt_ci(check[n], ".1f") if n in check else "n/a" for n in names) + " |")
    return lines


def _na_row(name: str) -> str:
    return f"| {name} | " + " | ".join(["n/a (local only)"] * (2 + len(METRICS))) + " | — |"


def case_table(plan: Sequence[tuple[Scenario, int]],
               runs: Mapping[str, Mapping[str, Sequence[ScenarioRun]]]) -> str:
    """Markdown: per case, every method's summed score as ``sim / local``."""
    names = list(runs["local"])
    lines = ["| case | seed | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for i, (scenario, seed) in enumerate(plan):
        cells = []
        for n in names:
            sim = f"{runs['sim'][n][i].summed_score:.1f}" if n in runs["sim"] else "n/a"
            cells.append(f"{sim} / {runs['local'][n][i].summed_score:.1f}")
        lines.append(f"| {scenario.name} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_markdown(plan: Sequence[tuple[Scenario, int]], numbers: Mapping[str, Any]
                     ) -> list[str]:
    """Markdown lines: the gain table per case and both targets, met or missed by how much."""
    r, gains = numbers["retained"], numbers["gains"]
    lines = ["| case | sim gain | local gain | retained (local / sim) |", "|---|---:|---:|---:|"]
    for i, (scenario, _) in enumerate(plan):
        ratio = r["per_case"][i]
        lines.append(f"| {scenario.name} | {gains['sim'][i]:+.1f} | {gains['local'][i]:+.1f} | "
                     + (f"{ratio:.2f}" if ratio is not None else
                        f"undefined (sim gain ≤ {r['per_case_threshold']:g})") + " |")
    lines += ["", f"Mean gain per case [95 % CI over cases]: sim "
                  f"{fmt_ci(gains['sim'], '+.1f')}, local {fmt_ci(gains['local'], '+.1f')}.", ""]
    if r["ratio"] is None:
        lines.append(f"**Gain retained: undefined.** The policy's summed simulator gain over "
                     f"Istio's defaults is {r['sim_total']:+.1f} over {len(plan)} cases, not "
                     f"above {r['threshold_total']:g} ({NEGLIGIBLE_GAIN_PER_STEP:g} point per "
                     f"step): there is no simulator gain to keep (local: "
                     f"{r['local_total']:+.1f}). Target ≥ {RETAINED_TARGET:.0%}: not measurable.")
    else:
        low, high = r["ci95"]
        ci = ("" if math.isnan(low) else f" [95 % bootstrap CI over cases {low:.2f}, "
              f"{high:.2f}" + (f"; {r['ci_resamples_left_out']} of {BOOTSTRAP_RESAMPLES} "
                               "resamples with no sim gain left out" if
                               r["ci_resamples_left_out"] else "") + "]")
        verdict = ("met" if r["ratio"] >= RETAINED_TARGET else
                   f"MISSED by {RETAINED_TARGET - r['ratio']:.2f} "
                   f"({(RETAINED_TARGET - r['ratio']) * 100:.0f} points)")
        lines.append(f"**Gain retained on real Envoy: {r['ratio']:.2f}**{ci} = "
                     f"{r['local_total']:+.1f} local / {r['sim_total']:+.1f} sim (summed over "
                     f"cases). Target ≥ {RETAINED_TARGET:.2f}: {verdict}.")
    vs = numbers["vs_adaptive"]
    if vs is not None:
        low, high = vs["ci95"]
        share = vs["wins"] / vs["n"]
        verdict = ("met" if share >= AC_WIN_TARGET - 1e-9 else
                   f"MISSED: {vs['wins']:g} of {vs['n']} where {math.ceil(AC_WIN_TARGET * vs['n'])}"
                   f" were needed")
        dm, (dl, dh) = vs["diff_mean"], vs["diff_ci95"]
        diff = f"{dm:+.1f}" + ("" if math.isnan(dl) else f" [{dl:+.1f}, {dh:+.1f}]")
        lines += ["", f"**Policy beats adaptive concurrency on local in {vs['wins']:g} of "
                      f"{vs['n']} cases** ({share:.0%}, Wilson 95 % CI [{low:.0%}, {high:.0%}]; "
                      f"ties count half; summed-score difference per case {diff}). Target ≥ 2/3: "
                      f"{verdict}."]
    return lines


def shown_path(path: Path | str) -> str:
    """``path`` as BENCHMARKS.md should show it: relative to the working directory (the
    repository's root, where the README's commands run) when it lies under it, else as given,
    so a recorded run names no machine-specific directory."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def plot_traces(plan: Sequence[tuple[Scenario, int]],
                runs: Mapping[str, Mapping[str, Sequence[ScenarioRun]]], path: Path) -> None:
    """PNG: one row per case, one column per backend; the per-step evaluation score of every
    method (run 0 = reset), fault windows shaded, the offered rate (req/s) dotted on a second
    axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs["local"])
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(len(plan), 2, figsize=(11, 2.6 * len(plan) + 0.6), squeeze=False,
                             sharey=True, constrained_layout=True)
    for i, (scenario, seed) in enumerate(plan):
        for j, backend in enumerate(BACKENDS):
            ax = axes[i][j]
            for n in names:
                if n not in runs[backend]:
                    continue
                steps = runs[backend][n][i].steps
                ax.plot([s.t for s in steps], [s.score for s in steps], marker=".",
                        color=colours[n], label=n)
            n_runs = len(runs[backend][POLICY][i].steps)
            for f in scenario.faults:
                if f.start_step < n_runs:
                    ax.axvspan(f.start_step - 0.5, min(f.end_step, n_runs) - 0.5, color="red",
                               alpha=0.1)
            rate = ax.twinx()
            rate.plot(range(n_runs), scenario.rates[:n_runs], color="grey", linestyle=":")
            rate.tick_params(labelsize=6, colors="grey")
            ax.set_title(f"{backend}: {scenario.name} (seed {seed})", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("score (good % − 100)", fontsize=7)
            if i == len(plan) - 1:
                ax.set_xlabel("run (0 = reset); dotted: offered req/s; red: fault", fontsize=7)
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(names), fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _check_writable(settings: ClosedLoopSettings) -> Path:
    """The output directory, created; TransferError (one line) if it or the benchmarks file
    cannot be written, found by writing there (:func:`check_writable_dir`,
    :func:`check_writable_file`) before the long run rather than when it ends."""
    output = settings.output.resolve()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransferError(f"cannot create output directory {output}: {exc.strerror}") from None
    try:
        check_writable_dir(output)
    except OSError as exc:
        raise TransferError(f"output directory {output} is not writable: {exc.strerror}"
                            ) from None
    if not settings.no_append:
        try:
            check_writable_file(settings.benchmarks)
        except OSError as exc:
            raise TransferError(f"benchmarks file {settings.benchmarks} is not writable: "
                                f"{exc.strerror}") from None
    return output


def run_closed_loop(settings: ClosedLoopSettings, command: str,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """The closed-loop transfer (module docstring): every method through the cases on the
    simulator, then each on a fresh local replica; writes ``results.json`` and ``traces.png``
    into ``settings.output``, appends the section (unless ``no_append``); returns the numbers.

    Raises:
        TransferError: bad settings, an unwritable output, a replica already up or left
            listening, or the local mesh failing (one line).
        rl.evaluation.transfer.NotAppendedError: the benchmarks file could not be written at the
            end (the results files are written, the section printed).
        rl.evaluation.checkpoint.CheckpointError: no usable checkpoint.
    """
    import torch

    from envs.actions import make_catalogue
    from envs.backends import make_backend
    from envs.settings import DEFAULT_ENV_CONFIG

    if settings.cases < 1 or settings.episode_len < 1 or not settings.step_s > 0:
        raise TransferError("--cases and --episode-len must be >= 1 and --step-s > 0")
    output = _check_writable(settings)
    torch.set_num_threads(1)
    policy = load_policy(settings.checkpoint or best_checkpoint(settings.sweep_results))
    busy = listening_ports(settings.replica)
    if busy:
        raise TransferError(f"replica {settings.replica} is up ({len(busy)} of its ports listen,"
                            f" from {busy[0]}): pick another --replica or stop it (meshtune "
                            f"mesh down --replica {settings.replica})")
    trained = {**DEFAULT_ENV_CONFIG, **policy.env_config}
    try:
        catalogue = make_catalogue(trained["catalogue"], trained["services"])
        methods = transfer_methods(policy.module, catalogue, settings.quick)
    except ValueError as exc:
        raise TransferError(str(exc)) from None
    plan = transfer_plan(settings.cases, settings.episode_len, settings.scenario_seed)
    longest = min(s.episode_len for s, _ in plan)
    if settings.episode_len > longest:
        raise TransferError(f"--episode-len must be <= {longest} (the cases' length)")
    load_start, t0 = os.getloadavg(), time.monotonic()
    log(f"[transfer] checkpoint {policy.path}; {len(plan)} cases × {settings.episode_len} steps "
        f"× {settings.step_s:g} s; methods {', '.join(methods)}; local replica "
        f"{settings.replica}; load average {load_start[0]:.2f}")

    sim = make_backend("sim")
    try:
        refused = {"sim": refusals(methods, sim)}
    finally:
        sim.close()
    runs: dict[str, dict[str, list[ScenarioRun]]] = {}
    t_sim = time.monotonic()
    runs["sim"] = evaluate_methods(plan, {n: m for n, m in methods.items()
                                          if n not in refused["sim"]},
                                   settings.step_s, settings.episode_len, catalogue, log=log)
    wall = {"sim": time.monotonic() - t_sim}
    t_local = time.monotonic()
    try:
        runs["local"] = evaluate_methods(
            plan, methods, settings.step_s, settings.episode_len, catalogue, log=log,
            backend_for=lambda controller: fresh_local_replica(controller, settings.replica))
    except BackendError as exc:
        raise TransferError(f"local replica {settings.replica}: {exc}") from None
    wall["local"] = time.monotonic() - t_local
    still_open = listening_ports(settings.replica)
    load_end = os.getloadavg()
    numbers = transfer_numbers(runs, settings.episode_len)
    numbers["reset_check"] = {b: reset_check(runs[b]) for b in BACKENDS}

    traces = output / "traces.png"
    plot_traces(plan, runs, traces)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"### {stamp} — `{command}`", "",
          f"Closed-loop transfer: checkpoint `{shown_path(policy.path)}` "
          f"({policy.env_steps_trained} env "
          f"steps on the simulator, trained with episodes of {trained['episode_len']} steps × "
          f"{trained['step_s']:g} s), greedy. {len(plan)} held-out case(s) "
          f"(`held_out_plan({len(plan)}, {max(settings.episode_len, MIN_EPISODE_LEN)}, "
          f"{settings.scenario_seed})`, played for their first {settings.episode_len} steps; "
          f"case seeds {plan[0][1]}..{plan[-1][1]}; the same load "
          f"seeds on both backends), {settings.step_s:g} s of offered load per run "
          f"(the reset run, then each step); every method through every case on the simulator "
          f"(loopback platform) and on the local mesh (replica {settings.replica}: real Envoy, "
          f"Locust, Prometheus on 127.0.0.1; every episode on a freshly started replica, the "
          f"methods interleaved case by case in a rotating order). "
          f"Rule-based parameters: {TUNED_RULE_PARAMS}. Wall time: simulator "
          f"{wall['sim']:.0f} s, local {wall['local']:.0f} s, total "
          f"{time.monotonic() - t0:.0f} s; machine load average (1 min) {load_start[0]:.2f} at "
          f"the start, {load_end[0]:.2f} at the end (2 cores, shared with other jobs). "
          f"After the run, ports of replica {settings.replica} still accepting connections: "
          f"{still_open or 'none'}.", "",
          "Gain = the policy's summed episode score (steps 1..T, good % − 100 per step) minus "
          "Istio's defaults' on the same case and backend.", "",
          *targets_markdown(plan, numbers), ""]
    for backend in BACKENDS:
        md += [f"**{backend}** — per method over the cases, mean [95 % bootstrap CI over "
               "cases]: summed score, score per step, and per case the mean over its healthy "
               "steps of good %, goodput, failure %, mean latency and p99:", "",
               methods_table(runs[backend])]
        md += [_na_row(name) for name in refused.get(backend, {})]
        md += [""]
        for name, reason in refused.get(backend, {}).items():
            md += [f"{name} on {backend}: n/a (local only) — {reason}.", ""]
    md += [*reset_check_markdown(runs), "",
           "Summed score per case, sim / local:", "", case_table(plan, runs), "",
           "Per-step score traces of every method, every case, both backends: "
           f"`{shown_path(traces)}`.", ""]
    text = "\n".join(md)
    summary = {"command": command, "date": stamp, "checkpoint": str(policy.path),
               "env_steps_trained": policy.env_steps_trained,
               "episode_len": settings.episode_len, "step_s": settings.step_s,
               "replica": settings.replica, "scenario_seed": settings.scenario_seed,
               "methods": list(methods), "refused": refused, "wall_s": wall,
               "load_average": {"start": list(load_start), "end": list(load_end)},
               "still_listening": still_open, **numbers,
               "backends": {b: results_json(runs[b], plan) for b in BACKENDS}}
    (output / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (output / "results.md").write_text(text)
    log("\n" + text)
    appended = settings.no_append or append_or_report(settings.benchmarks, SECTION, INTRO,
                                                      text + "\n", "transfer")
    if still_open:
        raise TransferError(f"replica {settings.replica} still listens on {still_open} "
                            "after the run")
    if not appended:
        raise NotAppendedError(f"could not append to {settings.benchmarks}")
    return summary


__all__ = ["AC_WIN_TARGET", "ADAPTIVE", "BASELINE", "DEFAULT_CASES", "DEFAULT_EPISODE_LEN",
           "DEFAULT_OUTPUT", "DEFAULT_REPLICA", "DEFAULT_STEP_S", "NEGLIGIBLE_GAIN_PER_STEP",
           "QUICK_CASES", "QUICK_EPISODE_LEN", "QUICK_METHODS", "RETAINED_TARGET",
           "ClosedLoopSettings", "case_table", "plot_traces", "refusals", "reset_check",
           "reset_check_markdown", "retained_ci", "run_closed_loop", "shown_path",
           "targets_markdown",
           "transfer_methods", "transfer_numbers", "transfer_plan"]
