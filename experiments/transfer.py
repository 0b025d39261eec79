"""Does the sim-trained policy transfer? One greedy episode on the simulator and on the real mesh.

    python experiments/transfer.py                          # best trial of results/pg_sweep
    python experiments/transfer.py --checkpoint PATH --episode-len 10

Loads a REINFORCE checkpoint (default: the best trial of ``results/pg_sweep/results.json``)
with ``experiments/evaluate.py``'s loader and runs ONE episode of its greedy policy
(``rl.evaluation.module_actor`` / ``run_episode``) from the same held-out seed on

(a) the simulator (``backend="sim"``) and
(b) the local mesh (``backend="local"``, replica ``--replica``, default 5: real Envoy 1.40,
    Locust and Prometheus on 127.0.0.1; started if not up and stopped again on close).

Everything else is the checkpoint's training env config: same catalogue, reward, users range
(hence the same observation normalisation) and ``requests_per_user``. The initial
configuration and the load (users) are the env's seeded draw of ``reset(seed)``, so they
are the same on both backends as long as the first draw passes each backend's health check
(the script checks and says so). The default seed, 1 000 003, is the first of pg_sweep's
held-out test seeds (``held_out_seeds``: 1 000 000+) whose load draw is the smallest of the
training range (10 users × 80 requests = 800 requests), so a local step takes ~10 s.

Then, for ``--cases`` more held-out seeds (default 6, from 1 000 010), the policy's greedy
episode runs on the simulator and the configuration it starts from and the one it ends with are
both measured on each backend (``--measure-runs`` fresh runs each, the same load seeds on both):
is the change the policy makes on the simulator a change for the better on the real data plane
too? (The policy is not re-run on the local mesh for these: 20 steps of real load per case
would take ~4 min; the single episode above checks that it acts the same there.)

Prints the tables (backend, initial → final evaluation score, failure %, p99, the actions taken,
wall time; per case the two backends' gains) and appends them, with the command and date, to
``BENCHMARKS.md`` (``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SWEEP_RESULTS = Path("results/pg_sweep/results.json")
DEFAULT_SEED = 1_000_003
DEFAULT_REPLICA = 5
#: First seed of the ``--cases`` comparisons (pg_sweep's held-out test seeds, after the default).
CASES_FIRST_SEED = 1_000_010


class TransferError(RuntimeError):
    """A problem the user can fix (missing checkpoint or results file, bad flag)."""


def _load_evaluate_script() -> ModuleType:
    """``experiments/evaluate.py`` as a module (``experiments`` is not a package)."""
    name = "meshtune_experiments_evaluate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def best_checkpoint(results_json: Path) -> Path:
    """The best trial's checkpoint recorded by ``pg_sweep.py`` in ``results_json``."""
    if not results_json.is_file():
        raise TransferError(f"{results_json} does not exist: run experiments/pg_sweep.py or "
                            "pass --checkpoint")
    best = json.loads(results_json.read_text()).get("best") or {}
    if not best.get("checkpoint"):
        raise TransferError(f"{results_json} records no best trial checkpoint")
    return Path(best["checkpoint"])


class RecordingWrapper(gym.Wrapper):
    """Keeps what ``run_episode`` does not return: the reset info and every action (the
    configurations are the MeshEnv's own ``initial_config`` and ``config``)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.reset_info: dict[str, Any] = {}
        self.actions: list[int] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.reset_info = dict(info)
        self.actions = []
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.actions.append(int(action))
        return self.env.step(action)


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
    configuration (``rl.evaluation.run_episode``), the same load seeds on every backend."""
    return _greedy_episode(env_config, module, seed, measure_runs)[0]


def _greedy_episode(env_config: dict[str, Any], module: Any, seed: int,
                    measure_runs: int) -> tuple[BackendRun, Any, Any]:
    """:func:`run_backend`'s episode, plus the configuration it ended with and its load."""
    from envs.mesh_env import MeshEnv
    from rl.evaluation.episode import module_actor, run_episode

    t0 = time.monotonic()
    env = RecordingWrapper(MeshEnv(env_config))
    try:
        outcome, _ = run_episode(env, module_actor(module, greedy=True), seed, measure_runs)
        mesh = env.unwrapped
        return BackendRun(
            backend=env_config["backend"], users=mesh.users, requests=mesh.requests,
            initial_config=mesh.initial_config,
            initial_eval_score=outcome.initial_eval_score,
            final_eval_score=outcome.final_eval_score,
            initial_failure_pct=float(env.reset_info["failure_pct"]),
            final_failure_pct=outcome.final_failure_pct,
            initial_p99_ms=float(env.reset_info["p99_ms"]),
            final_p99_ms=outcome.final_p99_ms,
            actions=list(env.actions), healthy_end=outcome.healthy_end,
            wall_s=time.monotonic() - t0), mesh.config, mesh.load_spec
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
    from envs.measure import mean_eval_score
    from envs.mesh_env import MeshEnv
    from rl.evaluation.episode import measurement_seeds

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
            print(f"[transfer] case {seed}: sim {_fmt(cases[-1].sim_gain, '+.0f')}, "
                  f"{other_config['backend']} {_fmt(cases[-1].other_gain, '+.0f')}", flush=True)
    finally:
        other.close()
    return cases


def cases_table(cases: list[CaseTransfer], other: str) -> str:
    """Markdown: one row per case, then the mean gains and how often the signs agree."""
    lines = [f"| seed | users | actions | sim initial → final | sim gain | {other} initial → final "
             f"| {other} gain |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        lines.append(f"| {c.seed} | {c.users} | {c.distinct_actions} distinct | "
                     f"{c.sim_initial:.0f} → {_fmt(c.sim_final, '.0f')} | "
                     f"{_fmt(c.sim_gain, '+.0f')} | {_fmt(c.other_initial, '.0f')} → "
                     f"{_fmt(c.other_final, '.0f')} | {_fmt(c.other_gain, '+.0f')} |")
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


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


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
            f"| {r.backend}{end} | {r.initial_eval_score:.0f} | {_fmt(r.final_eval_score, '.0f')}"
            f" | {_fmt(gain, '+.0f')} | {r.initial_failure_pct:.2f} → "
            f"{_fmt(r.final_failure_pct, '.2f')} | {r.initial_p99_ms:.0f} → "
            f"{_fmt(r.final_p99_ms, '.0f')} | {action_summary(r.actions, describe)} "
            f"| {r.wall_s:.0f} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line flags (module doc)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="REINFORCE Algorithm checkpoint (default: best trial of "
                        "--sweep-results)")
    p.add_argument("--sweep-results", type=Path, default=DEFAULT_SWEEP_RESULTS)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="reset seed of the episode on both backends (held-out)")
    p.add_argument("--episode-len", type=int, default=None,
                   help="steps (default: the checkpoint's env config, 20 if unset)")
    p.add_argument("--replica", type=int, default=DEFAULT_REPLICA,
                   help="local mesh replica (ports 21000 + 200·K ...)")
    p.add_argument("--measure-runs", type=int, default=3,
                   help="fresh load runs scoring the initial and the final configuration on "
                        "each backend (default 3; 0: the episode's own single runs)")
    p.add_argument("--cases", type=int, default=6,
                   help="held-out cases whose start and end configurations are also compared "
                        f"on both backends (default 6, seeds from {CASES_FIRST_SEED}; 0: none)")
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.episode_len is not None and args.episode_len < 1:
        p.error(f"--episode-len must be >= 1, got {args.episode_len}")
    if args.replica < 0:
        p.error(f"--replica must be >= 0, got {args.replica}")
    if args.measure_runs < 0:
        p.error(f"--measure-runs must be >= 0, got {args.measure_runs}")
    if args.cases < 0:
        p.error(f"--cases must be >= 0, got {args.cases}")
    if args.cases and args.measure_runs < 1:
        p.error("--cases needs --measure-runs >= 1 (each configuration is measured afresh)")
    return args


def run(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """Both episodes; returns (and unless --no-append appends) the markdown section."""
    import torch

    from envs.actions import make_catalogue
    from envs.backends.lease import ReplicaTakenError

    torch.set_num_threads(1)
    evaluate = _load_evaluate_script()
    checkpoint = args.checkpoint or best_checkpoint(args.sweep_results)
    try:
        policy = evaluate.load_policy(checkpoint)
    except evaluate.EvaluateError as exc:
        raise TransferError(str(exc)) from exc
    base = {k: v for k, v in policy.env_config.items() if k not in ("replica", "backend_kwargs")}
    if args.episode_len is not None:
        base["episode_len"] = args.episode_len
    episode_len = int(base.get("episode_len", 20))
    catalogue = make_catalogue(base.get("catalogue", "classic"), base.get("services"))
    print(f"[transfer] checkpoint {policy.path}; seed {args.seed}; episode_len {episode_len}; "
          f"local replica {args.replica}", flush=True)

    runs = []
    for backend, extra in (("sim", {}), ("local", {"replica": args.replica})):
        config = {**base, "backend": backend, "backend_kwargs": {}, **extra}
        print(f"[transfer] {backend}: running ...", flush=True)
        try:
            result = run_backend(config, policy.module, args.seed, args.measure_runs)
        except ReplicaTakenError as exc:
            raise TransferError(f"replica {args.replica} is leased by another env: {exc}") \
                from exc
        runs.append(result)
        print(f"[transfer] {backend}: {result.users} users × "
              f"{result.requests // result.users} requests, initial "
              f"{result.initial_eval_score:.0f} → final {_fmt(result.final_eval_score, '.0f')} "
              f"in {result.wall_s:.0f} s", flush=True)
    cases: list[CaseTransfer] = []
    if args.cases:
        print(f"[transfer] {args.cases} more cases: greedy episode on sim, its start and end "
              f"configuration measured on both backends ...", flush=True)
        case_seeds = list(range(CASES_FIRST_SEED, CASES_FIRST_SEED + args.cases))
        local_config = {**base, "backend": "local", "backend_kwargs": {},
                        "replica": args.replica}
        try:
            cases = transfer_cases(base, policy.module, case_seeds, args.measure_runs,
                                   local_config)
        except ReplicaTakenError as exc:
            raise TransferError(f"replica {args.replica} is leased by another env: {exc}") \
                from exc
    still_open = listening_ports(args.replica)
    sim, local = runs
    same_init = sim.initial_config == local.initial_config
    same_load = (sim.users, sim.requests) == (local.users, local.requests)
    same_actions = sim.actions == local.actions
    first_diff = next((i for i, (a, b) in enumerate(zip(sim.actions, local.actions,
                                                         strict=False)) if a != b), None)

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python experiments/transfer.py " + " ".join(shlex.quote(a) for a in argv)
    md = [f"### {stamp} — `{command.strip()}`", "",
          f"Checkpoint `{policy.path}` ({policy.env_steps_trained} env steps on the simulator); "
          f"greedy policy; one episode of {episode_len} steps from held-out seed {args.seed} "
          f"on each backend; local = replica {args.replica} (real Envoy, Locust, Prometheus "
          f"on 127.0.0.1). Load: {local.users} users × {local.requests // local.users} "
          f"requests = {local.requests} requests per run (the notebook's draw from the training "
          f"range {tuple(base.get('users_range', (10, 20)))}); same load on both: "
          f"{'yes' if same_load else 'NO'}. Initial configuration identical on both "
          f"backends: {'yes' if same_init else 'NO (a draw failed one health check)'}. "
          f"Same action sequence: {'yes' if same_actions else f'no, first differs at step {first_diff + 1}' if first_diff is not None else 'no (different lengths)'}. "  # noqa: E501
          f"Eval score: `envs.reward.evaluation_score`, higher is better"
          + (f", initial and final each the mean of {args.measure_runs} fresh runs of that "
             f"configuration after the episode (the same load seeds on both backends)"
             if args.measure_runs else ", the episode's own single runs")
          + f"; failure % and p99 (largest endpoint p99) are the episode's reset and last "
          f"runs. Wall time includes starting/stopping the local replica. After the "
          f"run, ports of replica {args.replica} still accepting connections: "
          f"{still_open or 'none'}.", "",
          table(runs, catalogue.describe), ""]
    if cases:
        md += [f"The policy's change on {len(cases)} more held-out cases (seeds "
               f"{cases[0].seed}..{cases[-1].seed}): its greedy episode on the simulator, then "
               f"the configuration it started from and the one it ended with, each measured as "
               f"the mean of {args.measure_runs} fresh runs of the case's load on each backend "
               f"(the same load seeds on both). Gain = final − initial eval score.", "",
               cases_table(cases, "local"), ""]
    text = "\n".join(md)
    print("\n" + text, flush=True)
    if not args.no_append:
        existing = args.benchmarks.read_text() if args.benchmarks.is_file() else ""
        header = "" if "\n## Transfer\n" in existing else "\n## Transfer\n\n"
        with args.benchmarks.open("a") as f:
            f.write(header + text + "\n")
    if still_open:
        raise TransferError(f"replica {args.replica} still listens on {still_open} after close")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(parse_args(argv), argv)
    except TransferError as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
