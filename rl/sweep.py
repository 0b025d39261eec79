"""The Tune sweep of the REINFORCE agent over learning rate and SLO strictness, on MeshEnv.

What ``experiments/pg_sweep.py`` runs: its settings (:func:`sweep_settings`, ``smoke`` shrinks
them), the backend check, the ReinforceConfig with Tune search spaces (:func:`build_param_space`),
the Tune run and its checkpoints (:func:`run_sweep`), one row per trial (:func:`trial_rows`) and
the ranking of trials by their greedy policy's mean per-step evaluation score through validation
scenarios (:func:`validate_trials`), never by the return, whose scale depends on the weight.

Schedule: FIFO with a fixed budget — every trial runs all ``iterations`` (no early stopping).
An asynchronous scheduler (ASHA, used before) stops a trial by comparing it with whatever
other trials happen to have reported by then, so which trials were stopped, and with them the
best trial and the held-out table, changed from run to run on the same seed. With a fixed
budget a trial's result depends only on its own seed and hyperparameters: the same ``--seed``
gives the same per-trial metrics, the same best trial and the same held-out table (tested;
on the simulator — real meshes, ``local`` and ``k8s``, are not repeatable — and as long as no
env runner crashes: a restarted runner re-seeds its envs);
with 2–4 trials the budget ASHA saved (a quarter) is won back by sampling several envs per env
runner (``--envs-per-runner``). The best trial is the one with the highest validation gain
(deterministic: fixed seeds, greedy policy), ties broken by the training gain (the ranking
metric averaged over the last :data:`RANK_LAST_N` iterations), then by the trial index (its
position in the grid).

Learners (``--learner``, :class:`Learner`): ``critic`` (the default, :data:`CRITIC`) and
``group`` (:data:`GROUP`, the default before 2026-12-05).

Training with ``critic``: MeshEnv v1 — every episode a scenario drawn from
:data:`envs.scenarios.TRAINING`, the SLO objective — with the ``setpoint_restore`` catalogue
(any rung of a knob in one action, or Istio's defaults everywhere) and the shared-weight policy
with an action-value head; the reward is the step's score against the same run without the
action (``reward_mode`` ``vs_keep``), one step (gamma 0, raw returns), so the critic ``Q(s, a)``
learns each action's one-step effect in score points and the policy term follows its ranking
over every action (:mod:`rl.learner`, Mean Actor-Critic); lr 1e-3 × late weights 0.75 / 1.0,
200 iterations. At late weight 1.0 9 of 10 trials learned to cap overload, at 0.5 none of 5;
0.75's trials validated between the two (BENCHMARKS.md, Closed-loop evaluation, 2026-12-05).

Training with ``group`` (REINFORCE with a group baseline): MeshEnv v1 — every
episode a scenario drawn from :data:`envs.scenarios.TRAINING` (load shifts, faults, three
starts), the SLO objective, the :data:`CATALOGUE` catalogue — with the shared-weight policy
(:mod:`rl.policies`); the reward is the step's score itself (``reward_mode`` ``absolute``: what
a controller delivers at every step, not the change a load shift causes), returns-to-go with
``gamma`` = :data:`GAMMA`; every run of an episode uses one load seed (``load_seed``
``per_episode``), and the batch's episodes come in groups of :data:`EPISODES_PER_SCENARIO` that
replay the same scenario, start and load seed, each return-to-go compared with its group's at
the same step (:func:`rl.connectors.subtract_group_mean`: what is left is what the actions did,
not how hard the scenario was); an entropy bonus of :data:`ENTROPY_COEFF`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from envs.backends.base import BackendError
from envs.backends.registry import TYPICAL_STEP_S, backend_factory
from envs.reward import SloObjective
from envs.scenarios import MIN_EPISODE_LEN
from envs.settings import DEFAULT_ENV_CONFIG
from rl.batching import groups_align

DEFAULT_OUTPUT = Path("results/pg_sweep")
#: Backends whose envs are in-process copies (any number per env runner); every env of the
#: others drives a replica of its own (``envs.backends.lease``).
IN_PROCESS_BACKENDS = ("sim",)
#: The ``--learner`` of the main job.
DEFAULT_LEARNER = "critic"
EXPERIMENT_NAME = "pg_sweep"
#: Training metric of the ranking's tie-break and the progress table (higher is better): the
#: mean per-step evaluation score of training episodes (``rl.callbacks``).
RANK_METRIC = "env_runners/eval_score_mean"
#: Iterations averaged for a trial's training score in the table (its last ones).
RANK_LAST_N = 3
#: SLO strictness swept by ``group``: the cost of a late answer relative to a failed one
#: (``late_weight``).
LATE_WEIGHTS = (0.5, 1.0)
#: Training iterations of every trial (16 episodes each).
ITERATIONS = 100
#: Adam learning rates swept (``--smoke``: the first only).
LEARNING_RATES = (1e-3, 3e-3)
#: Entropy bonus weight of every trial (keeps the 547 actions explored while the policy sharpens).
ENTROPY_COEFF = 0.01
#: Discount of the returns-to-go: an action's effect lasts (a limit stays until changed), so
#: a step's credit includes the next few steps' scores.
GAMMA = 0.8
#: Episodes of a batch that replay the same scenario with the same seeds (the group baseline,
#: :func:`rl.connectors.subtract_group_mean`): 16 episodes = 4 scenarios × 4 tries.
EPISODES_PER_SCENARIO = 4
#: The action catalogue the agent trains with: ``setpoint`` (any rung of a knob in one action).
#: With ``ladder``'s one-rung moves, the control that wins under overload — the front-end's
#: ``http2MaxRequests`` from Istio's unlimited default to 16 — is four moves away, none of
#: which pays before the last; one trial each, ``setpoint`` scored better on the held-out
#: cases than ``ladder`` (BENCHMARKS.md, Closed-loop evaluation: the training choices).
CATALOGUE = "setpoint"
#: The policy network (:mod:`rl.policies`).
POLICY = "shared"
#: Seconds of offered load per step in a ``--smoke`` run (the default's: MeshEnv's 10 s).
SMOKE_STEP_S = 2.0
#: CPUs one trial takes: its driver, learner and env runners share them.
CPUS_PER_TRIAL = 1.0


@dataclass(frozen=True)
class Learner:
    """What every trial of a sweep trains with (``--learner``): the action catalogue, the
    reward, how returns weigh the policy's log-probabilities, and the grid's defaults.

    Attributes:
        name: the ``--learner`` value.
        catalogue: the action catalogue (:data:`envs.actions.CATALOGUE_NAMES`).
        reward_mode: MeshEnv's ``reward_mode`` (``absolute``: the step's score; ``vs_keep``:
            the step's score against the same run without the action).
        gamma: discount of the returns-to-go.
        entropy_coeff: weight of the entropy bonus (in reward units per nat).
        episodes_per_scenario: default size of the groups of episodes that replay one scenario
            (1: no group baseline).
        learning_rates: the Adam learning rates of the grid (``--smoke``: the first only).
        iterations: training iterations of every trial (``--iterations`` overrides).
        num_epochs: passes of the learner over each batch.
        normalize_returns: centred ranks per step and the group / per-step baselines
            (``ReinforceConfig.normalize_returns`` and ``per_step_baseline``); False weighs the
            log-probabilities with the returns as they are.
        action_critic: the policy term over every action with a learned ``Q(s, a)``
            (``ReinforceConfig.action_critic``).
        critic_replay: samples the critic refits besides the batch (one-step targets only).
        explore_mix: ε of the env runners' behaviour policy (:mod:`rl.shared_module`).
        inert_zero: ``Q`` exactly 0 for actions that change nothing (:func:`rl.policies.
            inert_acts`; what ``vs_keep`` pays them).
        q_scale: the critic's output scale (the shared module's ``q_scale``; 1: none).
        late_weights: the grid's late weights (``--late-weights`` overrides).
    """

    name: str
    catalogue: str
    reward_mode: str
    gamma: float
    entropy_coeff: float
    episodes_per_scenario: int
    learning_rates: tuple[float, ...]
    iterations: int
    num_epochs: int = 1
    normalize_returns: bool = True
    action_critic: bool = False
    critic_replay: int = 0
    explore_mix: float = 0.0
    inert_zero: bool = False
    q_scale: float = 1.0
    late_weights: tuple[float, ...] = LATE_WEIGHTS


#: REINFORCE with the group baseline: each return-to-go of the step's own score against those
#: of the episodes that replayed the same scenario.
GROUP = Learner("group", CATALOGUE, "absolute", GAMMA, ENTROPY_COEFF, EPISODES_PER_SCENARIO,
                LEARNING_RATES, ITERATIONS)
#: The policy gradient over every action with an action critic (Mean Actor-Critic): the reward
#: is what the action did against not acting (``vs_keep``), one step (gamma 0), so the critic's
#: targets are exact one-step effects; it refits the last 30 000 samples, the env runners
#: explore with a 20 % uniform mixture, ``Q`` is 0 for actions that change nothing, and the
#: catalogue has a whole-mesh restore. Settings of BENCHMARKS.md's action-critic entries
#: (Closed-loop evaluation, 2026-12-04 21:40), with lr 1e-3: at 3e-3 the policy flipped between
#: the cap and restore-only from checkpoint to checkpoint (2026-12-05 entries); late weights
#: 0.75 / 1.0: at 0.5 no trial learned the cap (0 of 5), at 1.0 9 of 10 and at 0.75 two trials
#: came closer than 0.5 (validation −10.6 and −14.1 against −19 to −25).
CRITIC = Learner("critic", "setpoint_restore", "vs_keep", 0.0, 0.5, 1, (1e-3,), 200,
                 num_epochs=4, normalize_returns=False, action_critic=True,
                 critic_replay=30_000, explore_mix=0.2, inert_zero=True,
                 late_weights=(0.75, 1.0))
#: ``--learner`` values.
LEARNERS: dict[str, Learner] = {learner.name: learner for learner in (GROUP, CRITIC)}


#: Env-runner restarts a trial tolerates before it fails (RLlib's fault tolerance).
MAX_ENV_RUNNER_RESTARTS = 5
#: Floor of the sample timeout, s (RLlib's default).
MIN_SAMPLE_TIMEOUT_S = 60.0


def sample_timeout_s(settings: SweepSettings) -> float:
    """Seconds an env runner gets to return its share of a batch: 3 × its episodes × (steps + the
    reset's run) × the backend's typical step time (``envs.backends.registry.TYPICAL_STEP_S``),
    at least :data:`MIN_SAMPLE_TIMEOUT_S`. Its envs step one after the other (a synchronous
    vector env), so several envs per runner do not shorten it."""
    steps = (settings.episode_len or int(DEFAULT_ENV_CONFIG["episode_len"])) + 1
    episodes = math.ceil(settings.episodes_per_batch / settings.num_env_runners)
    return max(MIN_SAMPLE_TIMEOUT_S, 3.0 * episodes * steps * TYPICAL_STEP_S[settings.backend])


def concurrent_trials(num_cpus: int) -> int:
    """Trials run at once on ``num_cpus`` CPUs (``--max-concurrent-trials`` by default)."""
    return max(1, int(num_cpus // CPUS_PER_TRIAL))
#: Checkpoint every this many iterations (and at the end).
CHECKPOINT_EVERY = 25
#: Checkpoints a trial keeps by default, its latest ones (``--keep-checkpoints``; 0 keeps
#: every one, e.g. to rank them with ``scripts/rank_checkpoints.py``).
CHECKPOINTS_KEPT = 2


class SweepError(RuntimeError):
    """A problem the user can fix (bad flag, missing backend); printed without a traceback."""


class SweepInterruptedError(SweepError):
    """The sweep was stopped (Ctrl-C) before every trial finished; ``--resume`` continues it."""


@dataclass(frozen=True)
class SweepSettings:
    """Everything a sweep run depends on (``--smoke`` shrinks these)."""

    backend: str
    learner: str
    num_env_runners: int
    envs_per_runner: int
    episodes_per_scenario: int
    samples: int
    learning_rates: tuple[float, ...]
    iterations: int
    episodes_per_batch: int
    episode_len: int | None
    step_s: float | None
    validation_episodes: int
    eval_episodes: int
    max_concurrent_trials: int | None
    num_cpus: int | None
    seed: int
    output: Path
    address: str | None
    resume: bool
    keep_checkpoints: int = CHECKPOINTS_KEPT
    late_weights: tuple[float, ...] = LATE_WEIGHTS


def sweep_settings(*, smoke: bool = False, backend: str = "sim",
                   learner: str = DEFAULT_LEARNER,
                   num_env_runners: int | None = None, envs_per_runner: int | None = None,
                   episodes_per_scenario: int | None = None,
                   samples: int | None = None,
                   iterations: int | None = None, episodes_per_batch: int | None = None,
                   episode_len: int | None = None, validation_episodes: int | None = None,
                   eval_episodes: int | None = None,
                   max_concurrent_trials: int | None = None, num_cpus: int | None = None,
                   seed: int = 0,
                   output: Path = DEFAULT_OUTPUT, address: str | None = None,
                   resume: bool = False,
                   keep_checkpoints: int = CHECKPOINTS_KEPT,
                   learning_rates: Sequence[float] | None = None,
                   late_weights: Sequence[float] | None = None) -> SweepSettings:
    """The settings of a sweep: ``None`` sizes take the full (or ``smoke``) defaults; the
    numbers are checked (:class:`SweepError` names the flag). ``envs_per_runner`` defaults to
    each runner's share of a batch on the simulator (all its episodes of an iteration side by
    side: one batched forward pass per step for all of them), and to 1 on a real mesh
    (``local``, ``k8s``), where every env leases a replica of its own (a port block, a
    namespace): 8 envs per runner would ask for 32 replicas at once."""

    def pick(value: int | None, full: Any, tiny: Any) -> Any:
        return value if value is not None else (tiny if smoke else full)

    if learner not in LEARNERS:
        raise SweepError(f"--learner {learner!r}: choose one of {', '.join(LEARNERS)}")
    preset = LEARNERS[learner]
    runners = pick(num_env_runners, 2, 1)
    batch = pick(episodes_per_batch, 16, 2)
    settings = SweepSettings(
        backend=backend,
        learner=learner,
        num_env_runners=runners,
        envs_per_runner=(envs_per_runner if envs_per_runner is not None
                         else max(1, math.ceil(batch / max(1, runners)))
                         if backend in IN_PROCESS_BACKENDS else 1),
        episodes_per_scenario=0,  # set below: it depends on the envs per runner
        samples=pick(samples, 1, 1),
        learning_rates=(tuple(learning_rates) if learning_rates is not None
                        else preset.learning_rates[:1] if smoke else preset.learning_rates),
        iterations=pick(iterations, preset.iterations, 2),
        episodes_per_batch=batch,
        episode_len=pick(episode_len, None, MIN_EPISODE_LEN),
        step_s=None if not smoke else SMOKE_STEP_S,
        validation_episodes=pick(validation_episodes, 16, 2),
        eval_episodes=pick(eval_episodes, 18, 2),
        max_concurrent_trials=max_concurrent_trials,
        num_cpus=num_cpus,
        seed=seed,
        output=output.resolve(),
        address=address,
        resume=resume,
        keep_checkpoints=keep_checkpoints,
        late_weights=(tuple(late_weights) if late_weights is not None
                      else preset.late_weights),
    )
    # Default: the largest group size up to the learner's (smoke 2) dividing the envs.
    group = preset.episodes_per_scenario if preset.episodes_per_scenario == 1 or not smoke else 2
    settings = replace(settings, episodes_per_scenario=(
        episodes_per_scenario if episodes_per_scenario is not None
        else math.gcd(group, settings.envs_per_runner)))
    if preset.episodes_per_scenario == 1 and settings.episodes_per_scenario != 1:
        raise SweepError(f"--learner {learner} compares no episodes with each other: "
                         f"--episodes-per-scenario must be 1, got "
                         f"{settings.episodes_per_scenario}")
    for name in ("num_env_runners", "envs_per_runner", "episodes_per_scenario", "samples",
                 "iterations",
                 "episodes_per_batch",
                 "validation_episodes", "eval_episodes",
                 "max_concurrent_trials", "num_cpus"):
        if getattr(settings, name) is not None and getattr(settings, name) < 1:
            raise SweepError(f"--{name.replace('_', '-')} must be >= 1, "
                             f"got {getattr(settings, name)}")
    if not settings.learning_rates or not all(
            math.isfinite(lr) and lr > 0 for lr in settings.learning_rates):
        raise SweepError(f"--learning-rates must be positive numbers, got "
                         f"{list(settings.learning_rates)}")
    if not settings.late_weights:
        raise SweepError("--late-weights needs at least one weight")
    for weight in settings.late_weights:
        try:
            SloObjective(weight)  # the objective owns the range
        except ValueError as e:
            raise SweepError(f"--late-weights: {e} (a late answer costs at most a failed "
                             "one)") from None
    if settings.keep_checkpoints < 0:
        raise SweepError(f"--keep-checkpoints must be >= 0 (0: every one), got "
                         f"{settings.keep_checkpoints}")
    if settings.episode_len is not None and settings.episode_len < MIN_EPISODE_LEN:
        raise SweepError(f"--episode-len must be >= {MIN_EPISODE_LEN} (the training scenarios' "
                         f"shapes need it), got {settings.episode_len}")
    if settings.episodes_per_batch < settings.num_env_runners:
        raise SweepError(f"--episodes-per-batch ({settings.episodes_per_batch}) must be at least "
                         f"--num-env-runners ({settings.num_env_runners})")
    k, envs = settings.episodes_per_scenario, settings.envs_per_runner
    if not groups_align(k, envs, settings.episodes_per_batch, settings.num_env_runners):
        raise SweepError(
            f"--episodes-per-scenario ({k}) must divide --envs-per-runner ({envs}), and each "
            f"runner's share of --episodes-per-batch ({settings.episodes_per_batch} over "
            f"{settings.num_env_runners} runners) must be a multiple of --envs-per-runner: the "
            "envs of a group replay the same scenarios")
    return settings


def check_backend(name: str) -> None:
    """Raise :class:`SweepError` with the registry's message if backend ``name`` is unknown or
    its code cannot be imported (:func:`envs.backends.registry.backend_factory`)."""
    try:
        backend_factory(name)
    except (ValueError, BackendError) as exc:
        raise SweepError(str(exc)) from exc


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
    """MeshEnv settings shared by all trials (the late weight is added per trial): v1's
    defaults (training scenarios, SLO objective) with the learner's catalogue and reward
    (:class:`Learner`; ``group``: :data:`CATALOGUE`, the step's score), one load seed per
    episode."""
    learner = LEARNERS[settings.learner]
    config: dict[str, Any] = {"backend": settings.backend, "seed": settings.seed,
                              "catalogue": learner.catalogue,
                              "reward_mode": learner.reward_mode, "load_seed": "per_episode"}
    if settings.episode_len is not None:
        config["episode_len"] = settings.episode_len
    if settings.step_s is not None:
        config["step_s"] = settings.step_s
    return config


def build_param_space(settings: SweepSettings) -> Any:
    """The ReinforceConfig with Tune search spaces for ``lr`` and ``late_weight``."""
    from ray import tune

    from rl.callbacks import MeshMetricsCallback
    from rl.policies import inert_acts, policy_spec
    from rl.reinforce import ReinforceConfig

    mesh_env = import_mesh_env()
    runners = settings.num_env_runners
    learner = LEARNERS[settings.learner]
    spec, model_config = policy_spec(POLICY, base_env_config(settings))
    if learner.explore_mix:
        model_config = {**model_config, "explore_mix": learner.explore_mix}
    if learner.inert_zero:
        model_config = {**model_config, "inert_acts": inert_acts(base_env_config(settings))}
    if learner.q_scale != 1.0:
        model_config = {**model_config, "q_scale": learner.q_scale}
    env_config = {**base_env_config(settings),
                  "late_weight": tune.grid_search(list(settings.late_weights))}
    return (
        ReinforceConfig()
        .environment(mesh_env, env_config=env_config)
        .rl_module(rl_module_spec=spec, model_config=model_config)
        # Several envs per runner: each runner's episodes of an iteration side by side, one
        # batched forward pass per step (rl.reinforce.ReinforceEnvRunner: each env its quota of
        # whole episodes and its own seed, so the batch does not depend on timing).
        .env_runners(num_env_runners=runners, num_envs_per_env_runner=settings.envs_per_runner,
                     num_cpus_per_env_runner=CPUS_PER_TRIAL / 2 / runners,
                     sample_timeout_s=sample_timeout_s(settings))
        # A crashed env runner is restarted (its MeshEnv leases a replica again; the dead
        # one's lease is freed, envs.backends.lease) instead of failing the trial.
        .fault_tolerance(restart_failed_env_runners=True,
                         max_num_env_runner_restarts=MAX_ENV_RUNNER_RESTARTS,
                         delay_between_env_runner_restarts_s=1.0)
        .learners(num_learners=0, num_cpus_per_learner=CPUS_PER_TRIAL / 2)
        .resources(num_cpus_for_main_process=CPUS_PER_TRIAL / 2)
        .training(lr=tune.grid_search(list(settings.learning_rates)), gamma=learner.gamma,
                  num_episodes_per_train_batch=settings.episodes_per_batch,
                  # group: centred ranks per step, so the scenarios' hard steps (an overload, a
                  # fault) do not drown the ordinary ones (rl.connectors); critic: the vs_keep
                  # returns as they are (already against not acting).
                  normalize_returns=learner.normalize_returns,
                  per_step_baseline=learner.normalize_returns,
                  # Each return-to-go against its group's: the episodes that replayed the same
                  # scenario, start and load seed differ only in their actions (rl.connectors).
                  episodes_per_scenario=settings.episodes_per_scenario,
                  entropy_coeff=learner.entropy_coeff, num_epochs=learner.num_epochs,
                  action_critic=learner.action_critic, critic_replay=learner.critic_replay)
        .callbacks(MeshMetricsCallback)
        # Training seeds (runner r resets first with seed + r) stay far below the held-out ones.
        .debugging(seed=tune.randint(0, 100_000))
        .reporting(metrics_num_episodes_for_smoothing=settings.episodes_per_batch)
    )


def progress_reporter() -> Any:
    """Tune's console table with the columns that matter here, every 30 s."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={"lr": "lr", "env_config/late_weight": "late_w"},
        metric_columns={"training_iteration": "iter", RANK_METRIC: "eval_mean",
                        "env_runners/good_pct_mean": "good_%",
                        "env_runners/failure_pct_mean": "failure_%",
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


def run_sweep(settings: SweepSettings, max_concurrent_trials: int) -> Any:
    """Run (or resume) the Tune experiment, ``max_concurrent_trials`` trials at once, every trial
    for ``settings.iterations`` iterations (FIFO, see the module docstring); returns its
    ResultGrid. Trials are named by their index in the grid (:func:`trial_name`), so the names
    and directories are the same in every run of the same settings."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rl.reinforce import Reinforce

    storage, experiment = experiment_paths(settings)
    check_experiment_dir(settings)
    if settings.resume:
        print(f"[pg_sweep] resuming {experiment}", flush=True)
        tuner = tune.Tuner.restore(str(experiment), trainable=Reinforce, resume_errored=True)
        return check_finished(tuner.fit(), settings)
    tuner = tune.Tuner(
        Reinforce,
        param_space=build_param_space(settings),
        tune_config=tune.TuneConfig(
            metric=RANK_METRIC, mode="max", scheduler=FIFOScheduler(),
            num_samples=settings.samples, max_concurrent_trials=max_concurrent_trials,
            search_alg=BasicVariantGenerator(random_state=settings.seed),
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_NAME, storage_path=str(storage),
            stop={"training_iteration": settings.iterations},
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=CHECKPOINT_EVERY,
                num_to_keep=settings.keep_checkpoints or None, checkpoint_at_end=True),
            progress_reporter=progress_reporter(),
            verbose=1,
        ),
    )
    return check_finished(tuner.fit(), settings)


def check_finished(result_grid: Any, settings: SweepSettings) -> Any:
    """``result_grid`` if every trial ran all its iterations or failed; Tune returns from a run
    stopped by Ctrl-C (SIGINT) as from a finished one (its stopped trials even count as
    terminated), so a trial short of ``settings.iterations`` without an error raises
    :class:`SweepInterruptedError` (the state is saved: ``--resume`` continues it)."""
    unfinished = sum(1 for result in result_grid if result.error is None
                     and (result.metrics or {}).get("training_iteration", 0)
                     < settings.iterations)
    if unfinished:
        raise SweepInterruptedError(f"interrupted with {unfinished} of {len(result_grid)} trials "
                               f"unfinished; continue with --resume --output {settings.output}")
    return result_grid


def trial_index(trial_id: str) -> int:
    """A trial's position in the grid, from its Tune id (``<random>_<5-digit index>``)."""
    try:
        return int(trial_id.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"not a Tune trial id: {trial_id!r}") from None


def trial_name(trial: Any) -> str:
    """``trial_<index>``: the same in every run of the same settings (Tune's own trial ids
    start with a random prefix)."""
    return f"trial_{trial_index(trial.trial_id):05d}"


def trial_dirname(trial: Any) -> str:
    """The trial's directory: its name and hyperparameters, e.g.
    ``trial_00001_lr=0.001_late_weight=0.5``."""
    config = trial.config or {}
    return (f"{trial_name(trial)}_lr={config.get('lr')}_late_weight="
            f"{config.get('env_config', {}).get('late_weight')}")


def dir_trial_index(path: str | Path) -> int:
    """A trial's index from its directory (:func:`trial_dirname`)."""
    name = Path(path).name
    try:
        return int(name.split("_")[1])
    except (IndexError, ValueError):
        raise ValueError(f"not a trial directory of this sweep: {path}") from None


def rank_value(history: Any) -> float:
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
        index = dir_trial_index(result.path)
        rows.append({
            "trial": f"trial_{index:05d}",
            "index": index,
            "path": result.path,
            "lr": config.get("lr"),
            "late_weight": config.get("env_config", {}).get("late_weight"),
            "iterations": metrics.get("training_iteration", 0),
            "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
            "train_score": rank_value(history),
            "validation_score": math.nan,
            "validation_unhealthy": None,
            "env_config": dict(config.get("env_config", {})),
            "eval_score_mean": runners.get("eval_score_mean", math.nan),
            "good_pct": runners.get("good_pct_mean", math.nan),
            "goodput_rps": runners.get("goodput_rps_mean", math.nan),
            "failure_pct": runners.get("failure_pct_mean", math.nan),
            "mean_ms": runners.get("latency_mean_ms_mean", math.nan),
            "p99_ms": runners.get("latency_p99_ms_mean", math.nan),
            "unhealthy_end": runners.get("unhealthy_end", math.nan),
            "error": str(result.error) if result.error else "",
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
        })
    sort_rows(rows)
    return rows


def sort_rows(rows: list[dict[str, Any]]) -> None:
    """Best first: by validation score, then by training score, then by trial index (lowest
    first), so the order never depends on the order Tune returned the trials in; trials
    without a score rank below those with one."""
    def known(value: float) -> float:
        return -math.inf if math.isnan(value) else value

    rows.sort(key=lambda r: (-known(r["validation_score"]), -known(r["train_score"]),
                             r["index"]))


def validation_plan(seeds: list[int], episode_len: int) -> list[tuple[Any, int]]:
    """The validation cases: per seed a scenario drawn from :data:`envs.scenarios.TRAINING`
    with ``numpy.random.default_rng(seed)``, played with that seed (the same for all trials)."""
    import numpy as np

    from envs.scenarios import draw

    return [(draw("training", np.random.default_rng(seed), episode_len), seed) for seed in seeds]


def validate_trials(rows: list[dict[str, Any]], seeds: list[int]) -> None:
    """Set each trial's ``validation_score``: the mean per-step evaluation score of its last
    checkpoint's policy (greedy: the policy one deploys) through the validation scenarios
    (:func:`validation_plan`, closed loop on the simulator,
    :func:`rl.evaluation.closed_loop.run_scenario`), then re-sort ``rows``. A step an unhealthy
    end cut off counts as the worst score (-100), so a trial that breaks the mesh ranks low."""
    from envs.actions import make_catalogue
    from envs.settings import EnvSettings
    from rl.controllers import PolicyController
    from rl.evaluation.checkpoint import load_policy
    from rl.evaluation.scenario_eval import evaluate_methods

    for row in rows:
        if not row["checkpoint"] or row["error"]:
            continue
        env = EnvSettings.from_config(row["env_config"])
        catalogue = make_catalogue(env.catalogue, env.services)  # type: ignore[arg-type]
        module = load_policy(row["checkpoint"]).module
        runs = evaluate_methods(validation_plan(seeds, env.episode_len),
                                {"policy": lambda m=module, c=catalogue: PolicyController(m, c)},
                                env.step_s, env.episode_len, catalogue, log=lambda _: None)
        policy_runs = runs["policy"]
        row["validation_unhealthy"] = sum(1 for r in policy_runs if not r.healthy_end)
        row["validation_score"] = sum(r.mean_score for r in policy_runs) / len(policy_runs)
    sort_rows(rows)


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The first of the ranked ``rows`` with a validation score.

    Raises:
        SweepError: no trial has one (no checkpoint: every trial failed).
    """
    best = next((r for r in rows if not math.isnan(r["validation_score"])), None)
    if best is None:
        raise SweepError("no trial has a validation score (no checkpoint: every trial "
                         "failed); see the table above")
    return best
