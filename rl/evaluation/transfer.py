"""Does the sim-trained policy transfer? Its greedy episode on the simulator and on the local mesh
(``experiments/transfer.py``).

:func:`run_transfer` loads a REINFORCE checkpoint (default: the best trial of pg_sweep's
``results.json``) and runs ONE greedy episode (:func:`run_backend`) from the same held-out seed
on (a) the simulator and (b) the local mesh (real Envoy, Locust and Prometheus on 127.0.0.1,
replica ``replica``: started if not up and stopped again on close). Everything else is the
checkpoint's training env config. The initial configuration and the load are the env's seeded
draw of ``reset(seed)``, the same on both backends as long as the first draw passes each
backend's health check (the report says so).

Then, for ``cases`` more held-out seeds, the policy's greedy episode runs on the simulator and
the configuration it starts from and the one it ends with are both measured on each backend
(:func:`transfer_cases`, the same load seeds on both): is the change the policy makes on the
simulator a change for the better on the real data plane too?

The report (:func:`table`, :func:`cases_table`) is appended, with the command and date, to the
``## Transfer`` section of BENCHMARKS.md (:func:`rl.evaluation.benchmarks_md.append_or_report`).
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envs.actions import MeshConfig
from envs.backends.base import LoadSpec
from envs.measure import mean_eval_score
from rl.evaluation.actors import module_actor
from rl.evaluation.benchmarks_md import append_or_report
from rl.evaluation.checkpoint import DEFAULT_SWEEP_RESULTS, best_checkpoint, load_policy
from rl.evaluation.episode import run_episode
from rl.evaluation.seeds import measurement_seeds
from rl.evaluation.tables import fmt

#: Default reset seed of the one episode per backend: the first of pg_sweep's held-out test
#: seeds (1 000 000+) whose load draw is the smallest of the training range (10 users × 80
#: requests = 800 requests), so a local step takes ~10 s.
DEFAULT_SEED = 1_000_003
DEFAULT_REPLICA = 5
#: Fresh load runs scoring each initial and final configuration, and held-out cases compared.
DEFAULT_MEASURE_RUNS = 3
DEFAULT_CASES = 6
#: First seed of the ``cases`` comparisons (pg_sweep's held-out test seeds, after the default).
CASES_FIRST_SEED = 1_000_010
#: The BENCHMARKS.md section of the transfer runs, and the line under its heading.
SECTION = "## Transfer"
INTRO = ("Measured by `experiments/transfer.py`: by default the sim-trained policy and the "
         "baselines through held-out closed-loop scenarios on the simulator and on the local "
         "mesh (real Envoy), `rl.evaluation.transfer_closed_loop`; with `--classic` the earlier "
         "check, its greedy episode on both backends and its start and end configurations of "
         "held-out cases measured on both. Newest run last.")


class TransferError(RuntimeError):
    """A problem the user can fix (replica leased elsewhere or left listening)."""


class NotAppendedError(TransferError):
    """The benchmarks file could not be written: said on stderr already (one line, by
    :func:`append_or_report`), after the tables were printed and the results files written."""


@dataclass(frozen=True)
class TransferSettings:
    """What one transfer run does (``experiments/transfer.py``'s flags).

    Attributes:
        checkpoint: REINFORCE Algorithm checkpoint (None: the best trial of ``sweep_results``).
        sweep_results: pg_sweep's ``results.json``.
        seed: reset seed of the episode on both backends (held-out).
        episode_len: steps (None: the checkpoint's env config, 20 if unset).
        replica: local mesh replica.
        measure_runs: fresh load runs scoring the initial and the final configuration on each
            backend (0: the episode's own single runs).
        cases: held-out cases compared on both backends (seeds from :data:`CASES_FIRST_SEED`).
        benchmarks: the BENCHMARKS.md to append to.
        no_append: do not append.
    """

    benchmarks: Path
    checkpoint: Path | None = None
    sweep_results: Path = DEFAULT_SWEEP_RESULTS
    seed: int = DEFAULT_SEED
    episode_len: int | None = None
    replica: int = DEFAULT_REPLICA
    measure_runs: int = DEFAULT_MEASURE_RUNS
    cases: int = DEFAULT_CASES
    no_append: bool = False


@dataclass(frozen=True)
class BackendRun:
    """One greedy episode on one backend (scores: ``envs.reward.evaluation_score``, higher is
    better; failure in %, p99 = largest endpoint p99 in ms; None after an unhealthy end)."""

    backend: str
    users: int
    requests: int
    initial_config: Any
    initial_eval_score: float
    final_eval_score: float | None
    initial_failure_pct: float
    final_failure_pct: float | None
    initial_p99_ms: float
    final_p99_ms: float | None
    actions: list[int]
    healthy_end: bool
    wall_s: float


def run_backend(env_config: dict[str, Any], module: Any, seed: int,
                measure_runs: int = 0) -> BackendRun:
    """One greedy episode of ``module`` on ``MeshEnv(env_config)`` from ``reset(seed)``; the
    env (and a local replica it started) is closed whatever happens. With ``measure_runs`` > 0
    the initial and final eval scores are the means of that many fresh runs of each
    configuration (:func:`rl.evaluation.episode.run_episode`), the same load seeds on every
    backend."""
    return _greedy_episode(env_config, module, seed, measure_runs)[0]


def _greedy_episode(env_config: dict[str, Any], module: Any, seed: int,
                    measure_runs: int) -> tuple[BackendRun, MeshConfig, LoadSpec]:
    """:func:`run_backend`'s episode, plus the configuration it ended with and its load."""
    from envs.mesh_env import MeshEnv

    t0 = time.monotonic()
    env = MeshEnv(env_config)
    try:
        outcome, trace = run_episode(env, module_actor(module, greedy=True), seed, measure_runs)
        return BackendRun(
            backend=env_config["backend"], users=env.users, requests=env.requests,
            initial_config=env.initial_config,
            initial_eval_score=outcome.initial_eval_score,
            final_eval_score=outcome.final_eval_score,
            initial_failure_pct=float(trace.reset_info["failure_pct"]),
            final_failure_pct=outcome.final_failure_pct,
            initial_p99_ms=float(trace.reset_info["p99_ms"]),
            final_p99_ms=outcome.final_p99_ms,
            actions=list(trace.actions), healthy_end=outcome.healthy_end,
            wall_s=time.monotonic() - t0), env.config, env.load_spec
    finally:
        env.close()


@dataclass(frozen=True)
class CaseTransfer:
    """One held-out case: the sim-trained policy's start and end configuration measured on both
    backends (eval scores, means of ``measure_runs`` fresh runs; None: unhealthy there)."""

    seed: int
    users: int
    distinct_actions: int
    sim_initial: float
    sim_final: float | None
    other_initial: float | None
    other_final: float | None

    @staticmethod
    def _gain(initial: float | None, final: float | None) -> float | None:
        return None if initial is None or final is None else final - initial

    @property
    def sim_gain(self) -> float | None:
        """Final − initial on the simulator."""
        return self._gain(self.sim_initial, self.sim_final)

    @property
    def other_gain(self) -> float | None:
        """Final − initial on the other backend."""
        return self._gain(self.other_initial, self.other_final)


def transfer_cases(env_config: dict[str, Any], module: Any, seeds: list[int], measure_runs: int,
                   other_config: dict[str, Any]) -> list[CaseTransfer]:
    """Per seed, the greedy episode of ``module`` on the simulator (``env_config``), then its
    initial and final configuration measured ``measure_runs`` times on the simulator and on
    ``MeshEnv(other_config)``'s backend, under the episode's load and the same load seeds."""
    from envs.mesh_env import MeshEnv

    sim_config = {**env_config, "backend": "sim", "replica": None}
    episodes = [(seed, *_greedy_episode(sim_config, module, seed, measure_runs))
                for seed in seeds]
    cases = []
    other = MeshEnv(other_config)
    try:
        for seed, run, final, load in episodes:
            load_seeds = measurement_seeds(seed, measure_runs)
            other_initial = mean_eval_score(other.backend, load, run.initial_config, load_seeds)
            other_final = mean_eval_score(other.backend, load, final, load_seeds)
            cases.append(CaseTransfer(seed, load.users, len(set(run.actions)),
                                      run.initial_eval_score, run.final_eval_score,
                                      other_initial, other_final))
            print(f"[transfer] case {seed}: sim {fmt(cases[-1].sim_gain, '+.0f')}, "
                  f"{other_config['backend']} {fmt(cases[-1].other_gain, '+.0f')}", flush=True)
    finally:
        other.close()
    return cases


def cases_table(cases: list[CaseTransfer], other: str) -> str:
    """Markdown: one row per case, then the mean gains and how often the signs agree."""
    lines = [f"| seed | users | actions | sim initial → final | sim gain | {other} initial → final "
             f"| {other} gain |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        lines.append(f"| {c.seed} | {c.users} | {c.distinct_actions} distinct | "
                     f"{c.sim_initial:.0f} → {fmt(c.sim_final, '.0f')} | "
                     f"{fmt(c.sim_gain, '+.0f')} | {fmt(c.other_initial, '.0f')} → "
                     f"{fmt(c.other_final, '.0f')} | {fmt(c.other_gain, '+.0f')} |")
    both = [c for c in cases if c.sim_gain is not None and c.other_gain is not None]
    if both:
        sim_mean = sum(c.sim_gain for c in both) / len(both)
        other_mean = sum(c.other_gain for c in both) / len(both)
        agree = sum(1 for c in both if (c.sim_gain > 0) == (c.other_gain > 0))
        improved = sum(1 for c in both if c.other_gain > 0)
        lines += ["", f"Mean gain over the {len(both)} cases measured on both: sim "
                      f"{sim_mean:+.1f}, {other} {other_mean:+.1f}; improved on {other} in "
                      f"{improved} of {len(both)}; same sign in {agree} of {len(both)}."]
    missing = len(cases) - len(both)
    if missing:
        lines.append(f"{missing} case(s) unhealthy on a backend: no gain there.")
    return "\n".join(lines)


def listening_ports(replica: int) -> list[int]:
    """Ports of ``replica``'s block on 127.0.0.1 that still accept a connection."""
    from envs.backends.local.ports import BASE_PORT, BLOCK_SIZE, HOST

    first = BASE_PORT + BLOCK_SIZE * replica
    open_ports = []
    for port in range(first, first + BLOCK_SIZE):
        with socket.socket() as s:
            s.settimeout(0.05)
            if s.connect_ex((HOST, port)) == 0:
                open_ports.append(port)
    return open_ports


def action_summary(actions: list[int], describe: Any) -> str:
    """Distinct actions and the most frequent one with its share."""
    if not actions:
        return "no actions"
    (top, count), = Counter(actions).most_common(1)
    return (f"{len(set(actions))} distinct in {len(actions)} steps; most frequent "
            f"`{describe(top)}` ({100.0 * count / len(actions):.0f} %)")


def table(runs: list[BackendRun], describe: Any) -> str:
    """The markdown table of the runs."""
    lines = ["| backend | initial eval score | final eval score | improvement | failure % "
             "initial → final | p99 ms initial → final | actions | wall s |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in runs:
        gain = (None if r.final_eval_score is None
                else r.final_eval_score - r.initial_eval_score)
        end = "" if r.healthy_end else " (unhealthy end)"
        lines.append(
            f"| {r.backend}{end} | {r.initial_eval_score:.0f} | {fmt(r.final_eval_score, '.0f')}"
            f" | {fmt(gain, '+.0f')} | {r.initial_failure_pct:.2f} → "
            f"{fmt(r.final_failure_pct, '.2f')} | {r.initial_p99_ms:.0f} → "
            f"{fmt(r.final_p99_ms, '.0f')} | {action_summary(r.actions, describe)} "
            f"| {r.wall_s:.0f} |")
    return "\n".join(lines)


def run_transfer(settings: TransferSettings, command: str) -> str:
    """Both episodes and the cases; returns (and unless ``no_append`` appends) the markdown
    section, headed by the date and ``command``.

    Raises:
        TransferError: the replica is leased by another env, or still listens after close.
        NotAppendedError: the benchmarks file could not be written (the section is printed).
        rl.evaluation.checkpoint.CheckpointError: no usable checkpoint.
    """
    import torch

    from envs.actions import make_catalogue
    from envs.backends.lease import ReplicaTakenError

    torch.set_num_threads(1)
    policy = load_policy(settings.checkpoint or best_checkpoint(settings.sweep_results))
    # the training config without its replica and fault injection (none on the real mesh)
    base = {k: v for k, v in policy.env_config.items()
            if k not in ("replica", "backend_kwargs", "faults")}
    if settings.episode_len is not None:
        base["episode_len"] = settings.episode_len
    episode_len = int(base.get("episode_len", 20))
    catalogue = make_catalogue(base.get("catalogue", "classic"), base.get("services"))
    print(f"[transfer] checkpoint {policy.path}; seed {settings.seed}; episode_len {episode_len}; "
          f"local replica {settings.replica}", flush=True)

    runs = []
    for backend, extra in (("sim", {}), ("local", {"replica": settings.replica})):
        config = {**base, "backend": backend, **extra}
        print(f"[transfer] {backend}: running ...", flush=True)
        try:
            result = run_backend(config, policy.module, settings.seed, settings.measure_runs)
        except ReplicaTakenError as exc:
            raise TransferError(f"replica {settings.replica} is leased by another env: {exc}") \
                from exc
        runs.append(result)
        print(f"[transfer] {backend}: {result.users} users × "
              f"{result.requests // result.users} requests, initial "
              f"{result.initial_eval_score:.0f} → final {fmt(result.final_eval_score, '.0f')} "
              f"in {result.wall_s:.0f} s", flush=True)
    cases: list[CaseTransfer] = []
    if settings.cases:
        print(f"[transfer] {settings.cases} more cases: greedy episode on sim, its start and end "
              f"configuration measured on both backends ...", flush=True)
        case_seeds = list(range(CASES_FIRST_SEED, CASES_FIRST_SEED + settings.cases))
        local_config = {**base, "backend": "local", "replica": settings.replica}
        try:
            cases = transfer_cases(base, policy.module, case_seeds, settings.measure_runs,
                                   local_config)
        except ReplicaTakenError as exc:
            raise TransferError(f"replica {settings.replica} is leased by another env: {exc}") \
                from exc
    still_open = listening_ports(settings.replica)
    sim, local = runs
    same_init = sim.initial_config == local.initial_config
    same_load = (sim.users, sim.requests) == (local.users, local.requests)
    same_actions = sim.actions == local.actions
    first_diff = next((i for i, (a, b) in enumerate(zip(sim.actions, local.actions,
                                                         strict=False)) if a != b), None)

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"### {stamp} — `{command}`", "",
          f"Checkpoint `{policy.path}` ({policy.env_steps_trained} env steps on the simulator); "
          f"greedy policy; one episode of {episode_len} steps from held-out seed {settings.seed} "
          f"on each backend; local = replica {settings.replica} (real Envoy, Locust, Prometheus "
          f"on 127.0.0.1). Load: {local.users} users × {local.requests // local.users} "
          f"requests = {local.requests} requests per run (the notebook's draw from the training "
          f"range {tuple(base.get('users_range', (10, 20)))}); same load on both: "
          f"{'yes' if same_load else 'NO'}. Initial configuration identical on both "
          f"backends: {'yes' if same_init else 'NO (a draw failed one health check)'}. "
          f"Same action sequence: {'yes' if same_actions else f'no, first differs at step {first_diff + 1}' if first_diff is not None else 'no (different lengths)'}. "  # noqa: E501
          f"Eval score: `envs.reward.evaluation_score`, higher is better"
          + (f", initial and final each the mean of {settings.measure_runs} fresh runs of that "
             f"configuration after the episode (the same load seeds on both backends)"
             if settings.measure_runs else ", the episode's own single runs")
          + f"; failure % and p99 (largest endpoint p99) are the episode's reset and last "
          f"runs. Wall time includes starting/stopping the local replica. After the "
          f"run, ports of replica {settings.replica} still accepting connections: "
          f"{still_open or 'none'}.", "",
          table(runs, catalogue.describe), ""]
    if cases:
        md += [f"The policy's change on {len(cases)} more held-out cases (seeds "
               f"{cases[0].seed}..{cases[-1].seed}): its greedy episode on the simulator, then "
               f"the configuration it started from and the one it ended with, each measured as "
               f"the mean of {settings.measure_runs} fresh runs of the case's load on each backend "
               f"(the same load seeds on both). Gain = final − initial eval score.", "",
               cases_table(cases, "local"), ""]
    text = "\n".join(md)
    print("\n" + text, flush=True)
    appended = settings.no_append or append_or_report(settings.benchmarks, SECTION, INTRO,
                                                      text + "\n", "transfer")
    if still_open:
        raise TransferError(f"replica {settings.replica} still listens on {still_open} "
                            "after close")
    if not appended:
        raise NotAppendedError(f"could not append to {settings.benchmarks}")
    return text
