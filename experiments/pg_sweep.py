"""Tune sweep of the REINFORCE agent over learning rate and latency weight, on MeshEnv.

    python experiments/pg_sweep.py                     # default sweep on the simulator
    python experiments/pg_sweep.py --smoke             # tiny, under a minute (CI)
    python experiments/pg_sweep.py --resume            # continue the sweep in --output
    ray job submit --address http://127.0.0.1:8265 -- python experiments/pg_sweep.py --smoke

What it does:

1. runs a grid over ``lr`` × the reward's latency weight, ``--samples`` times (each repeat with
   its own seed, drawn from ``--seed``), each trial with ASHA early stopping for up to
   ``--iterations`` iterations, checkpointing every few iterations and at the end;
2. ranks trials by a weight-independent score — never by the return, whose scale depends on the
   latency weight: the eval-score gain of an episode is its final minus its initial
   configuration's ``envs.reward.evaluation_score``. ASHA uses that gain on the training
   episodes (``env_runners/eval_score_gain``); the final ranking uses it on validation episodes
   (seeds from 2 000 000, the same for every trial) run greedily with each trial's last
   checkpoint;
3. tests the best trial's policy on other held-out seeds (from 1 000 000; never used in
   training or validation) — greedily, and sampled as trained — against the uniform random
   policy, on the same seeds. Validation and test score each episode's initial and final
   configuration over ``--measure-runs`` fresh load runs (``rl.evaluation.episode``), so a gain is
   the configurations' difference, not one run's luck;
4. writes into ``--output``: ``results.md`` (trials table and held-out evaluation),
   ``results.json`` (the same numbers, the best checkpoint's path), ``learning_curves.png``,
   ``best_destination_rules.yaml`` (the greedy policy's final DestinationRules on the first
   held-out episode) and the Tune experiment (``tune/pg_sweep``, with TensorBoard event files).

Training (the REINFORCE settings every trial shares): each episode starts from a new random
initial configuration and load, and replays one load seed in all its runs (``load_seed``
``per_episode``), so a step's reward is what its action changed; returns-to-go with
``gamma`` = :data:`GAMMA`, shaped into per-step centred ranks (``rank_returns``), an entropy
bonus of :data:`ENTROPY_COEFF`.

Files are written as soon as their inputs exist, so whatever was produced stays on disk if a
later step fails. Ray: ``--address`` connects to a running cluster; without it, a job submitted
with ``ray job submit`` joins its cluster (``RAY_ADDRESS``), and otherwise a private local
instance with 2 CPUs is started.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path("results/pg_sweep")
EXPERIMENT_NAME = "pg_sweep"
#: Tune metric that drives ASHA (higher is better): the eval-score gain of training episodes.
RANK_METRIC = "env_runners/eval_score_gain"
#: Iterations averaged for a trial's training gain in the table (its last ones).
RANK_LAST_N = 3
#: Training reward latency weights swept (points per ms of one endpoint's p99).
LATENCY_WEIGHTS_PER_MS = (0.03, 0.1)
#: Adam learning rates swept (``--smoke``: the first only).
LEARNING_RATES = (1e-3, 3e-3)
#: Entropy bonus weight of every trial (keeps 144 actions explored while the policy sharpens).
ENTROPY_COEFF = 0.01
#: Discount of the returns-to-go. With the delta reward and a replayed load (``load_seed``
#: ``per_episode``) a step's reward already is its action's whole effect on the score; what
#: later steps add is other actions' doing, so a short horizon gives each action its own credit.
GAMMA = 0.5
CPUS_PER_TRIAL = 1.0
#: Checkpoint every this many iterations (and at the end, also when ASHA stops a trial).
CHECKPOINT_EVERY = 25


class SweepError(RuntimeError):
    """A problem the user can fix (bad flag, missing backend); printed without a traceback."""


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep run depends on (``--smoke`` shrinks these)."""

    backend: str
    num_env_runners: int
    samples: int
    learning_rates: tuple[float, ...]
    iterations: int
    episodes_per_batch: int
    episode_len: int | None
    validation_episodes: int
    eval_episodes: int
    measure_runs: int
    max_concurrent_trials: int
    seed: int
    output: Path
    address: str | None
    resume: bool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="sim", choices=("sim", "local", "k8s"),
                   help="mesh backend (default sim, the simulator)")
    p.add_argument("--num-env-runners", type=int, default=None,
                   help="env runners per trial (default 2; smoke 1)")
    p.add_argument("--samples", type=int, default=None,
                   help="repeats of the lr × latency-weight grid (default 1; smoke 1)")
    p.add_argument("--iterations", type=int, default=None,
                   help="max training iterations per trial (default 200; smoke 2)")
    p.add_argument("--episodes-per-batch", type=int, default=None,
                   help="complete episodes per REINFORCE update (default 16; smoke 2)")
    p.add_argument("--episode-len", type=int, default=None,
                   help="steps per episode (default: the env's; smoke 5)")
    p.add_argument("--validation-episodes", type=int, default=None,
                   help="validation episodes per trial, to rank them (default 16; smoke 2)")
    p.add_argument("--eval-episodes", type=int, default=None,
                   help="held-out test episodes per policy (default 30; smoke 3)")
    p.add_argument("--measure-runs", type=int, default=None,
                   help="fresh load runs that score each validation / test episode's initial "
                        "and final configuration (default 5; smoke 1)")
    p.add_argument("--max-concurrent-trials", type=int, default=2,
                   help="trials run at once (each takes 1 CPU; default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of search, training (default 0)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: the job's cluster or a private local one)")
    p.add_argument("--smoke", action="store_true", help="tiny sweep, under a minute")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep stored in --output instead of starting one")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"output directory (default {DEFAULT_OUTPUT})")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """Resolve defaults (smoke or full) and check the numbers."""
    smoke = args.smoke

    def pick(value: int | None, full: Any, tiny: Any) -> Any:
        return value if value is not None else (tiny if smoke else full)

    settings = SweepSettings(
        backend=args.backend,
        num_env_runners=pick(args.num_env_runners, 2, 1),
        samples=pick(args.samples, 1, 1),
        learning_rates=LEARNING_RATES[:1] if smoke else LEARNING_RATES,
        iterations=pick(args.iterations, 200, 2),
        episodes_per_batch=pick(args.episodes_per_batch, 16, 2),
        episode_len=pick(args.episode_len, None, 5),
        validation_episodes=pick(args.validation_episodes, 16, 2),
        eval_episodes=pick(args.eval_episodes, 30, 3),
        measure_runs=pick(args.measure_runs, 5, 1),
        max_concurrent_trials=args.max_concurrent_trials,
        seed=args.seed,
        output=args.output.resolve(),
        address=args.address,
        resume=args.resume,
    )
    for name in ("num_env_runners", "samples", "iterations", "episodes_per_batch",
                 "validation_episodes", "eval_episodes", "measure_runs",
                 "max_concurrent_trials"):
        if getattr(settings, name) < 1:
            raise SweepError(f"--{name.replace('_', '-')} must be >= 1, "
                             f"got {getattr(settings, name)}")
    if settings.episode_len is not None and settings.episode_len < 1:
        raise SweepError(f"--episode-len must be >= 1, got {settings.episode_len}")
    if settings.episodes_per_batch < settings.num_env_runners:
        raise SweepError(f"--episodes-per-batch ({settings.episodes_per_batch}) must be at least "
                         f"--num-env-runners ({settings.num_env_runners})")
    return settings


def check_backend(name: str) -> None:
    """Raise :class:`SweepError` naming what is missing if backend ``name`` cannot be built."""
    from envs.backends import BACKENDS

    if name not in BACKENDS:
        raise SweepError(
            f"backend {name!r} is not available: envs.backends.BACKENDS registers only "
            f"{sorted(BACKENDS)} — the {name!r} backend (envs/backends/{name}) has not been "
            f"written yet. Use --backend sim.")
    module_name, _, factory = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SweepError(f"backend {name!r} is registered but its module {module_name!r} cannot "
                         f"be imported: {exc}") from exc
    if not hasattr(module, factory):
        raise SweepError(f"backend {name!r} is registered as {BACKENDS[name]!r} but "
                         f"{module_name} has no {factory!r}")


def preflight_env(settings: SweepSettings) -> None:
    """Build (and close) one MeshEnv in this process, so a backend that cannot start (missing
    module, no cluster, no binaries) fails here with its own message, not inside Ray workers."""
    mesh_env = import_mesh_env()
    try:
        mesh_env(base_env_config(settings)).close()
    except Exception as exc:  # whatever it is, the user needs its message, not a trial error
        raise SweepError(f"backend {settings.backend!r} cannot start a MeshEnv: "
                         f"{type(exc).__name__}: {exc}") from exc


def import_mesh_env() -> Any:
    """``envs.mesh_env.MeshEnv``, or a :class:`SweepError` if it does not exist."""
    try:
        from envs.mesh_env import MeshEnv
    except ImportError as exc:
        raise SweepError(f"cannot import envs.mesh_env.MeshEnv: {exc}") from exc
    return MeshEnv


def base_env_config(settings: SweepSettings) -> dict[str, Any]:
    """MeshEnv settings shared by all trials (the latency weight is added per trial)."""
    config: dict[str, Any] = {"backend": settings.backend, "latency_unit": "ms",
                              "seed": settings.seed,
                              # A new random initial configuration and load every episode, so
                              # the policy learns moves that help any configuration, not one.
                              "init": "classic_random", "load_draw": "per_episode",
                              # Every run of an episode replays the same load (common random
                              # numbers): a step's reward is then what its action changed, not
                              # the load's run-to-run noise (envs.mesh_env, Load).
                              "load_seed": "per_episode"}
    if settings.episode_len is not None:
        config["episode_len"] = settings.episode_len
    return config


def build_param_space(settings: SweepSettings) -> Any:
    """The ReinforceConfig with Tune search spaces for ``lr`` and ``latency_weight``."""
    from ray import tune

    from rl.callbacks import MeshMetricsCallback
    from rl.reinforce import ReinforceConfig

    mesh_env = import_mesh_env()
    runners = settings.num_env_runners
    env_config = {**base_env_config(settings),
                  "latency_weight": tune.grid_search(list(LATENCY_WEIGHTS_PER_MS))}
    return (
        ReinforceConfig()
        .environment(mesh_env, env_config=env_config)
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=1,
                     num_cpus_per_env_runner=CPUS_PER_TRIAL / 2 / runners)
        .learners(num_learners=0, num_cpus_per_learner=CPUS_PER_TRIAL / 2)
        .resources(num_cpus_for_main_process=CPUS_PER_TRIAL / 2)
        .training(lr=tune.grid_search(list(settings.learning_rates)), gamma=GAMMA,
                  num_episodes_per_train_batch=settings.episodes_per_batch,
                  # Centred ranks per step: one repair of a broken mesh (+1 500 points) must
                  # not drown the +10..60 of ordinary good steps (rl.connectors).
                  normalize_returns=True, rank_returns=True,
                  entropy_coeff=ENTROPY_COEFF)
        .callbacks(MeshMetricsCallback)
        # Training seeds (runner r resets first with seed + r) stay far below the held-out ones.
        .debugging(seed=tune.randint(0, 100_000))
        .reporting(metrics_num_episodes_for_smoothing=settings.episodes_per_batch)
    )


def progress_reporter() -> Any:
    """Tune's console table with the columns that matter here, every 30 s."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={"lr": "lr", "env_config/latency_weight": "latency_w"},
        metric_columns={"training_iteration": "iter", RANK_METRIC: "eval_gain",
                        "env_runners/failure_pct": "failure_%", "env_runners/p99_ms": "p99_ms",
                        "env_runners/unhealthy_end": "unhealthy", "time_total_s": "time_s"},
        max_report_frequency=30, sort_by_metric=True)


def experiment_paths(settings: SweepSettings) -> tuple[Path, Path]:
    """``(Tune storage path, experiment directory)`` under ``--output``."""
    storage = settings.output / "tune"
    return storage, storage / EXPERIMENT_NAME


def check_experiment_dir(settings: SweepSettings) -> None:
    """``--resume`` needs a stored sweep; a fresh sweep must not overwrite one."""
    from ray import tune

    _, experiment = experiment_paths(settings)
    if settings.resume and not tune.Tuner.can_restore(str(experiment)):
        raise SweepError(f"--resume: no sweep to resume in {experiment}")
    if not settings.resume and experiment.exists():
        raise SweepError(f"{experiment} already holds a sweep: pass --resume to continue it or "
                         f"choose another --output")


def run_sweep(settings: SweepSettings) -> Any:
    """Run (or resume) the Tune experiment; returns its ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rl.reinforce import Reinforce

    storage, experiment = experiment_paths(settings)
    check_experiment_dir(settings)
    if settings.resume:
        print(f"[pg_sweep] resuming {experiment}", flush=True)
        tuner = tune.Tuner.restore(str(experiment), trainable=Reinforce, resume_errored=True)
        return tuner.fit()
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.iterations,
                              grace_period=max(1, settings.iterations // 2), reduction_factor=2)
    tuner = tune.Tuner(
        Reinforce,
        param_space=build_param_space(settings),
        tune_config=tune.TuneConfig(
            metric=RANK_METRIC, mode="max", scheduler=scheduler, num_samples=settings.samples,
            max_concurrent_trials=settings.max_concurrent_trials,
            search_alg=BasicVariantGenerator(random_state=settings.seed),
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_NAME, storage_path=str(storage),
            stop={"training_iteration": settings.iterations},
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=CHECKPOINT_EVERY, num_to_keep=2, checkpoint_at_end=True),
            progress_reporter=progress_reporter(),
            verbose=1,
        ),
    )
    return tuner.fit()


def _rank_value(history: Any) -> float:
    """Mean of the ranking metric over a trial's last :data:`RANK_LAST_N` reported iterations."""
    if history is None or RANK_METRIC not in history:
        return math.nan
    values = history[RANK_METRIC].dropna().to_numpy()[-RANK_LAST_N:]
    return float(values.mean()) if len(values) else math.nan


def trial_rows(result_grid: Any) -> list[dict[str, Any]]:
    """One row per trial, best first: hyperparameters, iterations, last training metrics."""
    rows = []
    for result in result_grid:
        history = result.metrics_dataframe
        metrics = result.metrics or {}
        runners = metrics.get("env_runners", {})
        config = result.config or {}
        rows.append({
            "trial": metrics.get("trial_id", Path(result.path).name if result.path else "?"),
            "path": result.path,
            "lr": config.get("lr"),
            "latency_weight": config.get("env_config", {}).get("latency_weight"),
            "iterations": metrics.get("training_iteration", 0),
            "train_eval_score_gain": _rank_value(history),
            "validation_gain": math.nan,
            "validation_unhealthy": None,
            "env_config": dict(config.get("env_config", {})),
            "eval_score_gain": runners.get("eval_score_gain", math.nan),
            "failure_pct": runners.get("failure_pct", math.nan),
            "p99_ms": runners.get("p99_ms", math.nan),
            "unhealthy_end": runners.get("unhealthy_end", math.nan),
            "error": str(result.error) if result.error else "",
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
        })
    sort_rows(rows)
    return rows


def sort_rows(rows: list[dict[str, Any]]) -> None:
    """Best first: by validation gain, then by training gain; trials without either last."""
    def known(value: float) -> float:
        return -math.inf if math.isnan(value) else value

    rows.sort(key=lambda r: (known(r["validation_gain"]), known(r["train_eval_score_gain"])),
              reverse=True)


def validate_trials(rows: list[dict[str, Any]], seeds: list[int], measure_runs: int) -> None:
    """Set each trial's ``validation_gain``: mean eval-score gain of its last checkpoint's
    policy (greedy: the policy one deploys) on the validation ``seeds`` — the same for all
    trials — each configuration scored over ``measure_runs`` fresh runs (``rl.evaluation.episode``),
    then re-sort ``rows``. A trial whose every validation episode ended unhealthy keeps NaN
    (no gain was measured) and ranks last."""
    from rl.evaluation.episode import evaluate, module_actor, summarise

    mesh_env = import_mesh_env()
    for row in rows:
        if not row["checkpoint"] or row["error"]:
            continue
        module = load_policy_module(row["checkpoint"])
        outcomes = evaluate(lambda seed, cfg=row["env_config"]: mesh_env({**cfg, "seed": seed}),
                            lambda env, seed, m=module: module_actor(m, greedy=True),
                            seeds, measure_runs=measure_runs)
        row["validation_unhealthy"] = sum(1 for o in outcomes if not o.healthy_end)
        if row["validation_unhealthy"] < len(outcomes):
            row["validation_gain"] = summarise(outcomes).mean
    sort_rows(rows)


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; "—" if there is none (a trial that reported nothing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    """The trials as a Markdown table, in the order of ``rows``."""
    lines = [
        f"| rank | trial | lr | latency weight (/ms) | iters | training gain (last "
        f"{RANK_LAST_N} it.) | validation gain | final failure % | final p99 ms "
        f"| unhealthy ends | error |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['trial']} | {_fmt(r['lr'], '.2e')} | {_fmt(r['latency_weight'], 'g')} "
            f"| {r['iterations']} | {_fmt(r['train_eval_score_gain'], '+.2f')} "
            f"| {_fmt(r['validation_gain'], '+.2f')} "
            f"| {_fmt(r['failure_pct'], '.2f')} | {_fmt(r['p99_ms'], '.1f')} "
            f"| {_fmt(r['unhealthy_end'], '.2f')} | {r['error'][:60]} |")
    return "\n".join(lines)


def plot_learning_curves(result_grid: Any, path: Path) -> None:
    """PNG: eval-score gain, failure % and p99 of training episodes per iteration, per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(RANK_METRIC, "eval-score gain (final − initial)"),
              ("env_runners/failure_pct", "final failure %"),
              ("env_runners/p99_ms", "final p99 (ms)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), constrained_layout=True)
    for result in result_grid:
        df = result.metrics_dataframe
        if df is None or "training_iteration" not in df:
            continue
        config = result.config or {}
        label = (f"lr={config.get('lr', float('nan')):.1e} "
                 f"w={config.get('env_config', {}).get('latency_weight')}")
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


def load_policy_module(checkpoint_dir: str | Path) -> Any:
    """The trained RLModule stored in an Algorithm checkpoint (no env runners are built)."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = Path(checkpoint_dir) / "learner_group" / "learner" / "rl_module" / DEFAULT_MODULE_ID
    if not path.is_dir():
        raise SweepError(f"checkpoint {checkpoint_dir} has no RLModule at {path}")
    return RLModule.from_checkpoint(path)


#: Held-out evaluation rows: key -> (label in the table, how actions are chosen).
EVAL_POLICIES = {
    "policy": "best trial, sampled (as trained)",
    "greedy": "best trial, greedy (argmax)",
    "random": "uniform random",
}


def held_out_evaluation(module: Any, env_config: dict[str, Any], seeds: list[int],
                        measure_runs: int, rules_path: Path | None = None) -> dict[str, Any]:
    """Evaluate ``module`` and the uniform random policy on the same held-out seeds.

    The module is run two ways: sampling its softmax (seeded by the episode's seed — the
    policy as it was trained) and greedily. Each episode's initial and final configuration are
    scored over ``measure_runs`` fresh load runs (the same loads for every policy). Writes the
    greedy policy's final DestinationRules of the first seed to ``rules_path`` (YAML).
    """
    from envs.istio import dump_rules
    from rl.evaluation.episode import (
        evaluate,
        module_actor,
        outcomes_to_records,
        summarise,
        uniform_random_actor,
        welch_t,
    )

    mesh_env = import_mesh_env()

    def make_env(seed: int) -> Any:
        return mesh_env({**env_config, "seed": seed})

    def save_rules(env: Any, outcome: Any) -> None:
        if rules_path is not None and outcome.seed == seeds[0]:
            final = ("unhealthy" if outcome.final_eval_score is None
                     else f"{outcome.final_eval_score:.2f}")
            header = (f"# meshtune: the best policy's final DestinationRules on held-out seed "
                      f"{outcome.seed}\n# evaluation score {outcome.initial_eval_score:.2f} "
                      f"(initial configuration) -> {final}\n")
            rules_path.write_text(header + dump_rules(env.current_rules()))

    actors = {
        "policy": lambda env, seed: module_actor(module, greedy=False, seed=seed),
        "greedy": lambda env, seed: module_actor(module, greedy=True),
        "random": lambda env, seed: uniform_random_actor(env.action_space, seed),
    }
    result: dict[str, Any] = {"seeds": seeds, "measure_runs": measure_runs}
    summaries = {}
    for key, make_actor in actors.items():
        outcomes = evaluate(make_env, make_actor, seeds,
                            on_episode_end=save_rules if key == "greedy" else None,
                            measure_runs=measure_runs)
        summaries[key] = summarise(outcomes)
        result[key] = asdict(summaries[key])
        result[f"{key}_episodes"] = outcomes_to_records(outcomes)
    result["welch_t_policy_minus_random"] = welch_t(summaries["policy"], summaries["random"])
    result["welch_t_greedy_minus_random"] = welch_t(summaries["greedy"], summaries["random"])
    return result


def evaluation_markdown(evaluation: dict[str, Any]) -> str:
    """The held-out comparison as a Markdown table."""
    lines = [
        f"Held-out evaluation: {len(evaluation['seeds'])} episodes on seeds "
        f"{evaluation['seeds'][0]}..{evaluation['seeds'][-1]} (never used in training or "
        "validation), the "
        "same seeds (initial configuration, load) for every row; eval-score gain = final − "
        "initial configuration's evaluation score (higher is better), each configuration "
        f"scored as the mean of {evaluation['measure_runs']} fresh load runs (the same "
        "loads for both and for every policy).",
        "",
        "| policy | mean gain | 95 % CI of the mean | std | median | improved | min | max "
        "| healthy ends | unhealthy ends |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in EVAL_POLICIES.items():
        s = evaluation[key]
        lines.append(f"| {label} | {s['mean']:+.2f} | {s['ci95_low']:+.2f} .. "
                     f"{s['ci95_high']:+.2f} | {s['std']:.2f} | {s['median']:+.2f} "
                     f"| {s['improved']:.0%} | {s['min']:+.2f} | {s['max']:+.2f} | {s['n']} "
                     f"| {s['unhealthy']} |")
    lines += ["", f"Welch t against random: greedy "
                  f"{evaluation['welch_t_greedy_minus_random']:.2f}, sampled "
                  f"{evaluation['welch_t_policy_minus_random']:.2f}."]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (NaN kept as NaN, which Python's json reads back)."""
    path.write_text(json.dumps(data, indent=2, default=str))


def run(settings: SweepSettings) -> dict[str, Any]:
    """The whole pipeline; returns what it wrote into results.json."""
    import ray

    from rl.evaluation.episode import TEST_FIRST_SEED, VALIDATION_FIRST_SEED, held_out_seeds
    from rl.ray_setup import init_ray

    check_backend(settings.backend)
    check_experiment_dir(settings)
    preflight_env(settings)
    settings.output.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"settings": {**asdict(settings), "output": str(settings.output)}}
    init_ray(settings.address)
    try:
        t0 = time.monotonic()
        result_grid = run_sweep(settings)
        summary["sweep_wall_s"] = time.monotonic() - t0
        rows = trial_rows(result_grid)
        summary["trials"] = rows
        write_json(settings.output / "results.json", summary)
        (settings.output / "results.md").write_text(
            f"# pg_sweep results\n\nTrials (validation pending):\n\n{trials_markdown(rows)}\n")
        plot_learning_curves(result_grid, settings.output / "learning_curves.png")

        validation_seeds = held_out_seeds(settings.validation_episodes, VALIDATION_FIRST_SEED)
        print(f"[pg_sweep] validating {len(rows)} trials on {len(validation_seeds)} seeds ...",
              flush=True)
        t1 = time.monotonic()
        validate_trials(rows, validation_seeds, settings.measure_runs)
        summary["validation_wall_s"] = time.monotonic() - t1
        summary["validation_seeds"] = validation_seeds
        write_json(settings.output / "results.json", summary)
        table = trials_markdown(rows)
        print("\n" + table, flush=True)
        (settings.output / "results.md").write_text(f"# pg_sweep results\n\n{table}\n")

        best = next((r for r in rows if not math.isnan(r["validation_gain"])), None)
        if best is None:
            raise SweepError("no trial has a validation score (no checkpoint, or every "
                             "validation episode ended unhealthy); see the table above")
        summary["best"] = {k: best[k] for k in ("trial", "lr", "latency_weight", "checkpoint",
                                                "env_config")}
        seeds = held_out_seeds(settings.eval_episodes, TEST_FIRST_SEED)
        print(f"[pg_sweep] held-out test of trial {best['trial']} vs uniform random on "
              f"{len(seeds)} seeds ...", flush=True)
        t2 = time.monotonic()
        evaluation = held_out_evaluation(load_policy_module(best["checkpoint"]),
                                         best["env_config"], seeds, settings.measure_runs,
                                         settings.output / "best_destination_rules.yaml")
        summary["held_out_eval_wall_s"] = time.monotonic() - t2
        summary["held_out"] = evaluation
        write_json(settings.output / "results.json", summary)
        text = evaluation_markdown(evaluation)
        print("\n" + text, flush=True)
        (settings.output / "results.md").write_text(
            f"# pg_sweep results\n\nTrials, best first: ranked by the validation gain (mean "
            f"eval-score gain of the trial's final policy, greedy, over validation seeds "
            f"{validation_seeds[0]}..{validation_seeds[-1]}); the training gain is "
            f"{RANK_METRIC} averaged over the last {RANK_LAST_N} iterations (what ASHA "
            f"used).\n\n{table}\n\nBest trial: {best['trial']} (lr {best['lr']:.2e}, latency "
            f"weight {best['latency_weight']}/ms), checkpoint `{best['checkpoint']}`.\n\n"
            f"{text}\n\nSweep wall time {summary['sweep_wall_s']:.0f} s; validation "
            f"{summary['validation_wall_s']:.0f} s; held-out test "
            f"{summary['held_out_eval_wall_s']:.0f} s.\n")
        return summary
    finally:
        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune's classic console output, so the CLIReporter's short table is used.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        settings = settings_from_args(parse_args(argv))
        t0 = time.monotonic()
        run(settings)
    except SweepError as exc:
        print(f"pg_sweep: error: {exc}", file=sys.stderr)
        return 2
    print(f"[pg_sweep] done in {time.monotonic() - t0:.0f} s; results in {settings.output}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
