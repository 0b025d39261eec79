"""Tune sweep of the REINFORCE agent over learning rate and SLO strictness, on MeshEnv.

    python experiments/pg_sweep.py                     # default sweep on the simulator
    python experiments/pg_sweep.py --smoke             # tiny, under a minute (CI)
    python experiments/pg_sweep.py --resume            # continue the sweep in --output
    ray job submit --address http://127.0.0.1:8265 -- python experiments/pg_sweep.py --smoke

What it does:

1. runs a grid over ``lr`` × the objective's late weight (how much a late answer costs against
   a failed one; the learner's, ``rl.sweep.Learner``), ``--samples`` times (each repeat with
   its own seed, drawn from ``--seed``), every trial for ``--iterations`` iterations (FIFO, no
   early stopping: the same ``--seed`` gives the same trials, best trial and held-out table,
   ``rl.sweep``), checkpointing every few iterations and at the end;
2. ranks trials by a weight-independent score — never by the return, whose scale depends on the
   weight: the mean per-step evaluation score (``envs.reward.evaluation_score``, good % − 100)
   of each trial's last checkpoint acting greedily, closed loop, through
   ``--validation-episodes`` scenarios drawn from the training distribution with seeds from
   2 000 000 (the same for every trial); ties go to the higher score of the training episodes
   (``env_runners/eval_score_mean``, last iterations), then to the lower trial index;
3. tests the best trial's greedy policy against Istio's defaults, the TPE-201 static
   configuration, the rule-based controller and the gateway throttle
   (``rl.evaluation.scenario_eval.standard_methods``) through ``--eval-episodes`` held-out
   scenarios (families training never sees; case seeds from 4 000 000), the same load seeds for
   every method; per method the score beside good %, goodput, failure %, mean latency and p99,
   the policy's win rates, the steady-state check, the policy's actions by observed cause, and
   the same policy shown other cases' observations (how much of its gain that loses);
4. writes into ``--output``: ``results.md`` (trials table and the held-out comparison),
   ``results.json`` (the same numbers, every step of every case, the best checkpoint's path),
   ``learning_curves.png``, ``fault_case.png`` (every method's per-step score through one
   held-out fault scenario), ``cause_action.png`` (the policy's actions by the cause it
   observed), ``best_destination_rules.yaml`` (the policy's last DestinationRules
   in the first held-out case) and the Tune experiment (``tune/pg_sweep``, one directory per
   trial named by its index, with TensorBoard event files). Two runs with the same flags write
   the same files except for wall times, the output path and the dashboard URL.

Training (the default ``--learner critic``, ``rl.sweep.CRITIC``): MeshEnv v1's scenarios and
SLO objective, the ``setpoint_restore`` catalogue (any rung of a knob in one action, or Istio's
defaults everywhere), the shared-weight policy (``rl.policies``) with a learned ``Q(s, a)``; the
reward is the step's score against the same run without the action, one step, and the policy
term follows the critic over every action (BENCHMARKS.md, Closed-loop evaluation: the action
critic); lr 1e-3 × late weights 0.75 / 1.0, 200 iterations each.

``--learner group`` (``rl.sweep.GROUP``, the default before 2026-12-05): the ``setpoint``
catalogue, the step's score as reward, returns-to-go with ``gamma`` = ``rl.sweep.GAMMA``, each
compared with those of the episodes that replayed the same scenario (``--episodes-per-scenario``,
the group baseline of ``rl.connectors``), an entropy bonus of ``rl.sweep.ENTROPY_COEFF``; lr
1e-3 / 3e-3 × late weights 0.5 / 1.0, 100 iterations each.

Files are written as soon as their inputs exist, so whatever was produced stays on disk if a
later step fails. Ray: ``--address`` connects to a running cluster; without it, a job submitted
with ``ray job submit`` joins its cluster (``RAY_ADDRESS``), and otherwise a private local
instance is started on 127.0.0.1 with every core (``--num-cpus`` caps it) and its dashboard,
whose URL is printed (``rl.ray_setup``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from envs.backends.registry import BACKENDS
from rl.evaluation.checkpoint import load_policy
from rl.evaluation.plots import plot_learning_curves
from rl.evaluation.scenario_eval import compare_held_out, held_out_plan
from rl.evaluation.seeds import VALIDATION_FIRST_SEED, held_out_seeds
from rl.evaluation.tables import trials_markdown
from rl.ray_setup import RaySetupError, init_ray
from rl.sweep import (
    CHECKPOINTS_KEPT,
    DEFAULT_LEARNER,
    DEFAULT_OUTPUT,
    LEARNERS,
    RANK_LAST_N,
    RANK_METRIC,
    SweepError,
    SweepInterruptedError,
    SweepSettings,
    best_trial,
    check_backend,
    check_experiment_dir,
    concurrent_trials,
    preflight_env,
    run_sweep,
    sweep_settings,
    trial_rows,
    validate_trials,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="sim",
                   help=f"mesh backend: {', '.join(BACKENDS)} (default sim, the simulator; "
                        "checked by envs.backends.registry)")
    p.add_argument("--learner", default=DEFAULT_LEARNER, choices=list(LEARNERS),
                   help="what the trials train with (rl.sweep.Learner): critic, the policy "
                        "gradient over every action with an action critic (default); group, "
                        "REINFORCE with the group baseline")
    p.add_argument("--learning-rates", type=float, nargs="+", default=None, metavar="LR",
                   help="the Adam learning rates of the grid (default: the learner's, "
                        "rl.sweep.Learner.learning_rates; smoke: its first)")
    p.add_argument("--late-weights", type=float, nargs="+", default=None, metavar="W",
                   help="the late weights of the grid: what a late answer costs against a "
                        "failed one (default: the learner's, rl.sweep.Learner.late_weights)")
    p.add_argument("--num-env-runners", type=int, default=None,
                   help="env runners per trial (default 2; smoke 1)")
    p.add_argument("--envs-per-runner", type=int, default=None,
                   help="envs each env runner steps side by side, one batched forward pass per "
                        "step (default on sim: its share of a batch, 8; smoke 2; on local and "
                        "k8s 1: each env drives a replica of its own)")
    p.add_argument("--episodes-per-scenario", type=int, default=None,
                   help="episodes of a batch that replay the same scenario, compared with each "
                        "other (default: the learner's, critic 1, group 4; smoke: group 2)")
    p.add_argument("--samples", type=int, default=None,
                   help="repeats of the lr × late-weight grid (default 1; smoke 1)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations of every trial (default: the learner's, critic "
                        "200, group 100; smoke 2)")
    p.add_argument("--episodes-per-batch", type=int, default=None,
                   help="complete episodes per REINFORCE update (default 16; smoke 2)")
    p.add_argument("--episode-len", type=int, default=None,
                   help="steps per episode (default: the env's, 20; at least 8; smoke 8)")
    p.add_argument("--validation-episodes", type=int, default=None,
                   help="validation episodes per trial, to rank them (default 16; smoke 2)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="held-out scenarios of the test of the best trial (default 18; smoke 2)")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="trials run at once (each takes 1 CPU; default: one per CPU of Ray)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the private local Ray (default: every core of this machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of search, training (default 0)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: the job's cluster or a private local one)")
    p.add_argument("--keep-checkpoints", type=int, default=CHECKPOINTS_KEPT,
                   help=f"checkpoints each trial keeps, its latest (default {CHECKPOINTS_KEPT}; "
                        "0: every one, taken every 25 iterations)")
    p.add_argument("--smoke", action="store_true", help="tiny sweep, under a minute")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep stored in --output instead of starting one")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"output directory (default {DEFAULT_OUTPUT})")
    return p.parse_args(argv)


def make_output_dir(path: Path) -> None:
    """Create ``--output`` (and its parents); a path that cannot be created is a SweepError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--output {path}: cannot create it: {exc.strerror or exc}") from None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (NaN kept as NaN, which Python's json reads back)."""
    path.write_text(json.dumps(data, indent=2, default=str))


def run(settings: SweepSettings) -> dict[str, Any]:
    """The whole pipeline; returns what it wrote into results.json."""
    import ray

    check_backend(settings.backend)
    check_experiment_dir(settings)
    preflight_env(settings)
    make_output_dir(settings.output)
    summary: dict[str, Any] = {"settings": {**asdict(settings), "output": str(settings.output)}}
    runtime = init_ray(settings.address, num_cpus=settings.num_cpus)
    try:
        trials_at_once = settings.max_concurrent_trials or concurrent_trials(runtime.num_cpus)
        summary["ray"] = {"num_cpus": runtime.num_cpus, "max_concurrent_trials": trials_at_once,
                          "dashboard_url": runtime.dashboard_url}
        print(f"[pg_sweep] Ray: {runtime.num_cpus} CPUs, {trials_at_once} trials at once",
              flush=True)
        t0 = time.monotonic()
        result_grid = run_sweep(settings, trials_at_once)
        summary["sweep_wall_s"] = time.monotonic() - t0
        rows = trial_rows(result_grid)
        summary["trials"] = rows
        write_json(settings.output / "results.json", summary)
        (settings.output / "results.md").write_text(
            f"# pg_sweep results\n\nTrials (validation pending):\n\n{trials_markdown(rows)}\n")
        plot_learning_curves(result_grid, settings.output / "learning_curves.png")

        validation_seeds = held_out_seeds(settings.validation_episodes, VALIDATION_FIRST_SEED)
        print(f"[pg_sweep] validating {len(rows)} trials on {len(validation_seeds)} training "
              "scenarios ...", flush=True)
        t1 = time.monotonic()
        validate_trials(rows, validation_seeds)
        summary["validation_wall_s"] = time.monotonic() - t1
        summary["validation_seeds"] = validation_seeds
        write_json(settings.output / "results.json", summary)
        table = trials_markdown(rows)
        print("\n" + table, flush=True)
        (settings.output / "results.md").write_text(f"# pg_sweep results\n\n{table}\n")

        best = best_trial(rows)
        summary["best"] = {k: best[k] for k in ("trial", "lr", "late_weight", "checkpoint",
                                                "env_config")}
        print(f"[pg_sweep] held-out test of trial {best['trial']} against the baselines on "
              f"{settings.eval_episodes} held-out scenarios ...", flush=True)
        t2 = time.monotonic()
        held_out, held_out_md = held_out_test(best, settings.eval_episodes, settings.output)
        summary["held_out_eval_wall_s"] = time.monotonic() - t2
        summary["held_out"] = held_out
        write_json(settings.output / "results.json", summary)
        print("\n" + held_out_md, flush=True)
        (settings.output / "results.md").write_text(
            f"# pg_sweep results\n\nTrials, best first: ranked by the validation score (mean "
            f"per-step evaluation score, good % − 100, of the trial's final policy acting "
            f"greedily through {len(validation_seeds)} training-distribution scenarios, seeds "
            f"{validation_seeds[0]}..{validation_seeds[-1]}); the training score is "
            f"{RANK_METRIC} averaged over the last {RANK_LAST_N} iterations (the tie-break, "
            f"then the trial index). Every trial ran {settings.iterations} iterations (no "
            f"early stopping).\n\n{table}\n\nBest trial: {best['trial']} (lr "
            f"{best['lr']:.2e}, late weight {best['late_weight']}), checkpoint "
            f"`{best['checkpoint']}`.\n\n## Held-out scenarios\n\n"
            f"{held_out_md}\n\nSweep wall time {summary['sweep_wall_s']:.0f} s; validation "
            f"{summary['validation_wall_s']:.0f} s; held-out test "
            f"{summary['held_out_eval_wall_s']:.0f} s.\n")
        return summary
    finally:
        ray.shutdown()


#: ``best_destination_rules.yaml`` when the policy's last configuration is Istio's defaults (a
#: whole-mesh restore, or nothing changed): a YAML comment, so ``kubectl apply`` gets no rule.
NO_RULES_NOTE = ("# Istio's defaults: the policy's last configuration in the first held-out case "
                 "sets no DestinationRule\n")


def held_out_test(best: dict[str, Any], n_cases: int, output: Path) -> tuple[dict[str, Any], str]:
    """The best trial's greedy policy and the baselines (``standard_methods``) through
    ``n_cases`` held-out scenarios on the simulator; writes ``best_destination_rules.yaml`` (the
    policy's last configuration in the first case; :data:`NO_RULES_NOTE` if that is Istio's
    defaults) and ``fault_case.png``. Returns the numbers and the markdown."""
    from envs.actions import make_catalogue
    from envs.istio import dump_rules, rules_for
    from envs.settings import EnvSettings

    env = EnvSettings.from_config(best["env_config"])
    catalogue = make_catalogue(env.catalogue, env.services)  # type: ignore[arg-type]
    module = load_policy(best["checkpoint"]).module
    plan = held_out_plan(n_cases, env.episode_len)
    runs, md, numbers = compare_held_out(module, catalogue, plan, env.step_s, env.episode_len,
                                         output, log=lambda line: print(line, flush=True))
    rules = rules_for(runs["policy"][0].final_config)
    (output / "best_destination_rules.yaml").write_text(
        dump_rules(rules) if rules else NO_RULES_NOTE)
    return numbers, "\n".join(md)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's classic console output, so the CLIReporter's short table is used.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        settings = sweep_settings(**vars(parse_args(argv)))
        t0 = time.monotonic()
        run(settings)
    except SweepInterruptedError as exc:  # Ctrl-C: nothing written, the Tune state kept
        print(f"pg_sweep: {exc}", file=sys.stderr)
        return 130
    except (SweepError, RaySetupError) as exc:
        print(f"pg_sweep: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a results file that cannot be written: what is on disk stays
        print(f"pg_sweep: error: {exc}", file=sys.stderr)
        return 1
    print(f"[pg_sweep] done in {time.monotonic() - t0:.0f} s; results in {settings.output}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
