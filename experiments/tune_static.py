"""The TPE-201 static configuration: what an operator would deploy after tuning on the steady load.

    python experiments/tune_static.py                 # ~1 min on the simulator; writes the YAML
    python experiments/tune_static.py --no-write      # measure and print only
    python experiments/tune_static.py --rules         # tune the rule-based controller instead
    python experiments/tune_static.py --rules --candidates 320 --top-k 40
        # ... with the main job's budget (6,400 episodes, ~8 min): how
        # rl.controllers.TUNED_RULE_PARAMS was chosen

Optuna TPE (:func:`rl.baselines.tpe_search`: seeded, multivariate, Istio's defaults evaluated
first) searches the agent's knob space (:func:`rl.baselines.reachable_space`, the six classic
knobs of the 12 tunable services, 72 integers) with ``--runs`` (201) load runs of the steady
nominal open load (:data:`envs.sockshop.slo.NOMINAL_RATE_RPS` req/s, ``rate × step_s`` requests
per run, i.e. one ``MeshEnv`` step's worth), each with its own load seed, maximising the SLO
evaluation score (:func:`envs.reward.evaluation_score` = good % − 100). One run is noisy (a
few hundred requests), so the best single run is partly luck: the ``--top-k`` best-scoring
configurations are re-measured on ``--selection-seeds`` other load seeds and the best mean wins
(Istio's defaults are always among the finalists: the tuned configuration never is a lucky
draw worse than doing nothing). The winner and Istio's defaults are then measured on
``--fresh-seeds`` fresh load seeds, never used by the search or the selection, and the table
prints good %, goodput, failure %, mean latency, p99 and the score of both, each a mean with
its 95 % bootstrap interval over those seeds.

Load seeds: search run ``k`` uses ``SEARCH_SEED_BASE + k``, selection ``SELECTION_SEED_BASE +
j``, fresh ``FRESH_SEED_BASE + j`` (disjoint ranges, away from the evaluation's).

Writes ``--output`` (default :data:`envs.settings.TUNED_STATIC_PATH`,
``envs/data/tuned_static.yaml``): the winner as DestinationRules (:func:`envs.istio.rules_for`,
:func:`envs.istio.write_rules`) under a comment saying how it was made. ``MeshEnv``'s ``tuned``
start and the evaluation's ``tpe_201`` static method read it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.actions import MeshConfig, istio_default_config
from envs.backends import make_backend
from envs.backends.base import Backend, LoadSpec
from envs.istio import read_rules, rules_for, write_rules
from envs.istio.rule_file import pools_of
from envs.istio.yaml_io import atomic_write
from envs.measure import Measurement, measure
from envs.settings import TUNED_STATIC_PATH
from envs.sockshop.slo import NOMINAL_RATE_RPS
from rl.baselines import SearchTrace, reachable_space, tpe_search
from rl.evaluation.scenario_tables import fmt_ci

#: Load seed of search run k: SEARCH_SEED_BASE + k; selection and fresh seeds likewise.
SEARCH_SEED_BASE = 7_000_000
SELECTION_SEED_BASE = 7_100_000
FRESH_SEED_BASE = 7_200_000


class TuneError(RuntimeError):
    """A problem the user can fix (bad size); printed without a traceback."""


@dataclass(frozen=True)
class StaticTuning:
    """The outcome of :func:`tune_static`.

    Attributes:
        trace: every search run (configuration, score).
        finalists: the configurations re-measured for selection (Istio's defaults first).
        selection_means: their mean evaluation score over the selection seeds.
        best: the winner.
    """

    trace: SearchTrace
    finalists: list[MeshConfig]
    selection_means: list[float]
    best: MeshConfig


def steady_load(rate_rps: float, step_s: float) -> LoadSpec:
    """The steady open load of one run: ``rate_rps`` for about ``step_s`` seconds."""
    return LoadSpec(users=0, requests=max(1, round(rate_rps * step_s)), mode="open",
                    arrival_rate_rps=rate_rps)


def measure_seeds(backend: Backend, config: MeshConfig, load: LoadSpec,
                  seeds: Sequence[int]) -> list[Measurement]:
    """One :func:`envs.measure.measure` of ``config`` per load seed."""
    return [measure(backend, config, load, s) for s in seeds]


def tune_static(backend: Backend, load: LoadSpec, runs: int, seed: int, top_k: int,
                selection_seeds: int) -> StaticTuning:
    """TPE with ``runs`` load runs, then the ``top_k`` best runs' configurations and Istio's
    defaults re-measured on ``selection_seeds`` load seeds; the best mean wins (module doc)."""
    space = reachable_space()

    def evaluate(config: MeshConfig, k: int) -> float:
        return measure(backend, config, load, SEARCH_SEED_BASE + k).objective

    trace = tpe_search(evaluate, space, runs, seed, start=istio_default_config())
    order = np.argsort(trace.scores, kind="stable")[::-1][:top_k]
    finalists: list[MeshConfig] = [istio_default_config()]
    for i in order:
        if trace.configs[i] not in finalists:
            finalists.append(trace.configs[i])
    seeds = [SELECTION_SEED_BASE + j for j in range(selection_seeds)]
    means = [float(np.mean([m.objective for m in measure_seeds(backend, c, load, seeds)]))
             for c in finalists]
    return StaticTuning(trace, finalists, means, finalists[int(np.argmax(means))])


def table(rows: dict[str, list[Measurement]]) -> str:
    """Markdown: per configuration, score and what users got, mean [95 % CI] over load seeds."""
    lines = ["| configuration | score (good % − 100) | good % | goodput req/s | failure % "
             "| mean ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, ms in rows.items():
        def col(attr: str, spec: str, ms: list[Measurement] = ms) -> str:
            return fmt_ci([getattr(m, attr) for m in ms if getattr(m, attr) is not None], spec)
        lines.append(f"| {name} | {col('eval_score', '.2f')} | {col('good_pct', '.2f')} "
                     f"| {col('goodput_rps', '.1f')} | {col('failure_pct', '.2f')} "
                     f"| {col('latency_mean_ms', '.0f')} | {col('latency_p99_ms', '.0f')} |")
    return "\n".join(lines)


def describe_config(config: MeshConfig) -> str:
    """The configuration's rules as YAML (empty: Istio's defaults)."""
    from envs.istio.yaml_io import dump_rules

    return dump_rules(rules_for(config)) or "(no DestinationRule: Istio's defaults)\n"


def write_config(path: Path, config: MeshConfig, header: str) -> None:
    """Write ``config`` as DestinationRules to ``path`` with a ``#`` comment ``header`` on top,
    and check the file reads back as the same configuration."""
    write_rules(path, rules_for(config))  # validates
    body = path.read_text()
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write(path, (comment + body).encode("utf-8"))
    if pools_of(read_rules(path)) != {s: p for s, p in config.items() if p is not None}:
        raise RuntimeError(f"{path} does not read back as the configuration written")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=201, help="TPE load runs (default 201)")
    p.add_argument("--seed", type=int, default=0, help="TPE's seed (default 0)")
    p.add_argument("--rate", type=float, default=NOMINAL_RATE_RPS,
                   help=f"offered rate, req/s (default {NOMINAL_RATE_RPS:g})")
    p.add_argument("--step-s", type=float, default=10.0,
                   help="seconds of requests per run (default 10: a MeshEnv step)")
    p.add_argument("--top-k", type=int, default=8, help="search runs re-measured (default 8)")
    p.add_argument("--selection-seeds", type=int, default=10,
                   help="load seeds of the selection (default 10)")
    p.add_argument("--fresh-seeds", type=int, default=30,
                   help="fresh load seeds of the final table (default 30)")
    p.add_argument("--output", type=Path, default=TUNED_STATIC_PATH,
                   help=f"DestinationRule YAML to write (default {TUNED_STATIC_PATH})")
    p.add_argument("--no-write", action="store_true", help="print only, write nothing")
    p.add_argument("--rules", action="store_true",
                   help="tune the rule-based controller's parameters instead (prints them)")
    p.add_argument("--candidates", type=int, default=32,
                   help="--rules: parameter sets tried (default 32)")
    p.add_argument("--scenarios", type=int, default=16,
                   help="--rules: TRAINING scenarios per candidate (default 16)")
    return p.parse_args(argv)


def run_rules(args: argparse.Namespace) -> str:
    """Tune the rule-based controller (:func:`rl.baselines.tune_rule_params`); print the
    ranking and the winner."""
    from rl.baselines import tune_rule_params

    if args.candidates < 1 or args.scenarios < 1 or args.top_k < 1:
        raise TuneError("--candidates, --scenarios and --top-k must be >= 1")
    t0 = time.monotonic()
    backend = make_backend("sim")
    try:
        tuning = tune_rule_params(backend, args.candidates, args.scenarios, args.seed,
                                  top_k=min(args.top_k, args.candidates),
                                  step_s=args.step_s)
    finally:
        backend.close()
    lines = [f"Rule-based controller: {args.candidates} parameter sets (seed {args.seed}) x "
             f"{args.scenarios} TRAINING scenarios, top {len(tuning.finalists)} re-played on "
             f"32 other TRAINING scenarios; {tuning.episodes} episodes, "
             f"{time.monotonic() - t0:.0f} s.", "",
             "| candidate | search mean summed score | selection mean summed score | params |",
             "|---:|---:|---:|---|"]
    sel = dict(zip(tuning.finalists, tuning.selection_scores, strict=True))
    for i in np.argsort(tuning.scores, kind="stable")[::-1][:8]:
        s = f"{sel[i]:.1f}" if i in sel else "—"
        lines.append(f"| {i} | {tuning.scores[i]:.1f} | {s} | {tuning.candidates[i]} |")
    lines += ["", f"best: {tuning.best!r}"]
    text = "\n".join(lines)
    print(text)
    return text


def run(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """Search, select, re-measure, print the table, write the YAML; returns the table."""
    if args.rules:
        return run_rules(args)
    for name in ("runs", "top_k", "selection_seeds"):
        if getattr(args, name) < 1:
            raise TuneError(f"--{name.replace('_', '-')} must be >= 1")
    if args.fresh_seeds < 2:
        raise TuneError("--fresh-seeds must be >= 2 (an interval needs a spread)")
    if not args.rate > 0 or not args.step_s > 0:
        raise TuneError("--rate and --step-s must be > 0")
    t0 = time.monotonic()
    load = steady_load(args.rate, args.step_s)
    backend = make_backend("sim")
    try:
        tuning = tune_static(backend, load, args.runs, args.seed, args.top_k,
                             args.selection_seeds)
        fresh = [FRESH_SEED_BASE + j for j in range(args.fresh_seeds)]
        rows = {"Istio's defaults": measure_seeds(backend, istio_default_config(), load, fresh),
                f"TPE-{args.runs} static": measure_seeds(backend, tuning.best, load, fresh)}
    finally:
        backend.close()
    command = "python experiments/tune_static.py " + " ".join(shlex.quote(a) for a in argv)
    best_run = int(np.argmax(tuning.trace.scores))
    chosen = tuning.finalists.index(tuning.best)
    summary = (
        f"{command.strip()}\n"
        f"Optuna TPE (seed {args.seed}), {args.runs} runs of the steady open load "
        f"{args.rate:g} req/s x {load.requests} requests on the simulator; best single run "
        f"{tuning.trace.scores[best_run]:.2f} (run {best_run}); {len(tuning.finalists)} "
        f"finalists re-measured on {args.selection_seeds} seeds: "
        + ", ".join(f"{m:.2f}" for m in tuning.selection_means)
        + f" -> finalist {chosen}"
        + (" (Istio's defaults)" if chosen == 0 else "")
        + f"; {time.monotonic() - t0:.0f} s.")
    text = (f"{summary}\n\nFresh load seeds {fresh[0]}..{fresh[-1]}: mean [95 % CI] over "
            f"{len(fresh)} runs.\n\n{table(rows)}\n")
    print(text)
    print(describe_config(tuning.best))
    if not args.no_write:
        write_config(args.output, tuning.best,
                     "The TPE-201 static configuration (experiments/tune_static.py):\n"
                     + summary + "\nFresh re-measurement:\n" + table(rows))
        print(f"wrote {args.output}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(parse_args(argv), argv)
    except (TuneError, OSError, ValueError) as exc:
        print(f"tune_static: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
