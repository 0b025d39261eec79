"""How much do the held-out cases reward reacting? The look-ahead oracle and its blind replay.

Issue 12's "it uses what it sees" targets (≥ 5 distinct actions chosen by state; an observation
shuffle losing ≥ 50 % of the gain) presume that the held-out cases reward acting on what is
observed. This measures whether they do, with no learner involved
(:mod:`rl.evaluation.oracle`), on the simulator, through the held-out cases of
``rl.evaluation.scenario_eval.held_out_plan`` (the main job's, same case seeds):

* ``lookahead_oracle`` — at every step the catalogue action whose configuration scores best
  under the next run's rate and faults (it is told them), on look-ahead load seeds of its own
  (every candidate on ``--screen-seeds``, the ``--top-k`` best again on ``--confirm-seeds``
  others), taken only if it beats no change by more than ``--min-gain`` points;
* ``blind_replay`` — the oracle's action sequence of case ``i + 1`` played on case ``i`` from
  case ``i``'s start (the ablation's shuffle, applied to the oracle);
* for reference, the methods of the held-out comparison (Istio's defaults, the TPE-201 static
  configuration, the tuned rule-based controller, the gateway throttle, the scenario's start
  kept: ``keep_start``) and front-end ``http2MaxRequests`` 16 from the start.

Prints the methods table (summed and per-step score beside good %, goodput, failure %, mean
latency and p99), the oracle's win rates, its distinct actions, the share of its gain over
Istio's defaults the blind replay loses, and the per-case summed scores; appends them with the
date and the command to the ``## Closed-loop evaluation`` section of BENCHMARKS.md
(``--no-write``: print only).

    python scripts/headroom.py

(5.5 min on a quiet machine, ~10 min beside a training job.) Same flags, same numbers (every
draw seeded). Bad flags are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Closed-loop evaluation"
INTRO = "Every method through the same held-out scenarios, on the simulator."
ORACLE = "lookahead_oracle"
REPLAY = "blind_replay"


@dataclass(frozen=True)
class Args:
    """The command line (flags of the same names)."""

    catalogue: str = "setpoint_restore"
    screen_seeds: int = 1
    top_k: int = 8
    confirm_seeds: int = 4
    min_gain: float = 1.0
    cases: int = 18
    episode_len: int = 20
    step_s: float = 10.0
    no_write: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """The flags; a bad one is an argparse error (one line, exit 2)."""
    from envs.actions import CATALOGUE_NAMES
    from envs.scenarios import MIN_EPISODE_LEN

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalogue", choices=CATALOGUE_NAMES, default=Args.catalogue,
                   help="the actions the oracle chooses among (default %(default)s)")
    p.add_argument("--screen-seeds", type=int, default=Args.screen_seeds,
                   help="first round: look-ahead seeds per candidate (default %(default)s)")
    p.add_argument("--top-k", type=int, default=Args.top_k,
                   help="candidates passed to the second round (default %(default)s)")
    p.add_argument("--confirm-seeds", type=int, default=Args.confirm_seeds,
                   help="second round: other look-ahead seeds (default %(default)s)")
    p.add_argument("--min-gain", type=float, default=Args.min_gain,
                   help="points a change must beat no change by (default %(default)s)")
    p.add_argument("--cases", type=int, default=Args.cases,
                   help="held-out cases (default %(default)s, the main job's)")
    p.add_argument("--episode-len", type=int, default=Args.episode_len,
                   help="steps per case (default %(default)s)")
    p.add_argument("--step-s", type=float, default=Args.step_s,
                   help="seconds of offered load per run (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print only")
    ns = p.parse_args(argv)
    for flag in ("screen_seeds", "top_k", "confirm_seeds"):
        if getattr(ns, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(ns, flag)}")
    if not ns.min_gain >= 0:
        p.error(f"--min-gain must be >= 0 points, got {ns.min_gain}")
    if ns.cases < 2:
        p.error(f"--cases must be >= 2 (the replay needs a neighbour), got {ns.cases}")
    if not MIN_EPISODE_LEN <= ns.episode_len <= 1000:
        p.error(f"--episode-len must be in {MIN_EPISODE_LEN}..1000 (the scenario shapes need "
                f"{MIN_EPISODE_LEN}), got {ns.episode_len}")
    if not ns.step_s > 0:
        p.error(f"--step-s must be > 0 s, got {ns.step_s}")
    return Args(**vars(ns))


def run(args: Args) -> tuple[dict[str, list], list, dict[str, dict]]:
    """Every method through the cases; returns the runs by method, the plan and the oracle's
    statistics (candidates measured, its gain and the replay's)."""
    from envs.actions import make_catalogue
    from envs.backends import make_backend
    from envs.knobs import Knob, with_knob
    from rl.controllers import (
        TUNED_RULE_PARAMS,
        GatewayThrottle,
        KeepStart,
        RuleBasedController,
        StaticController,
        istio_defaults,
        tuned_static,
    )
    from rl.evaluation.ablation import gain_lost, shuffled_sources
    from rl.evaluation.closed_loop import run_scenario
    from rl.evaluation.oracle import ActionReplay, LookaheadOracle
    from rl.evaluation.scenario_eval import evaluate_methods, held_out_plan

    catalogue = make_catalogue(args.catalogue)  # type: ignore[arg-type]
    plan = held_out_plan(args.cases, args.episode_len)
    h2_16 = {"front-end": with_knob(None, Knob.HTTP2_MAX_REQUESTS, 16)}
    oracles: list[LookaheadOracle] = []

    def oracle() -> LookaheadOracle:
        o = LookaheadOracle(catalogue, lambda: make_backend("sim"), args.step_s,
                            args.screen_seeds, args.top_k, args.confirm_seeds, args.min_gain,
                            ORACLE)
        oracles.append(o)
        return o

    try:
        tuned = tuned_static()
        runs = evaluate_methods(
            plan, {ORACLE: oracle, "istio_default": istio_defaults, "tpe_201": lambda: tuned,
                   "rule_based": lambda: RuleBasedController(TUNED_RULE_PARAMS, catalogue),
                   "gateway_throttle": GatewayThrottle,
                   "front_end_h2_16": lambda: StaticController(h2_16, "front_end_h2_16"),
                   "keep_start": KeepStart},
            args.step_s, args.episode_len, catalogue)
    finally:
        for o in oracles:
            o.close()
    backend = make_backend("sim")
    try:
        replays = []
        for (scenario, seed), source in zip(plan, shuffled_sources(len(plan)), strict=True):
            actions = [s.action for s in runs[ORACLE][source].steps[1:]]
            r = run_scenario(backend, scenario, ActionReplay(catalogue, actions, REPLAY), seed,
                             args.step_s, args.episode_len, catalogue)
            r.controller = REPLAY
            replays.append(r)
    finally:
        backend.close()
    runs = {ORACLE: runs[ORACLE], REPLAY: replays,
            **{k: v for k, v in runs.items() if k != ORACLE}}
    stats = {"evaluated": {"candidates": sum(o.evaluated for o in oracles)},
             "replay": gain_lost(runs[ORACLE], replays, runs["istio_default"]),
             "replay_vs_throttle": gain_lost(runs[ORACLE], replays, runs["gateway_throttle"])}
    return runs, plan, stats


def markdown(args: Args, runs: dict[str, list], plan: list, stats: dict[str, dict]) -> str:
    """The tables and the reading's figures."""
    from envs.actions import make_catalogue
    from rl.evaluation.scenario_eval import action_summary, report_markdown

    catalogue = make_catalogue(args.catalogue)  # type: ignore[arg-type]
    md, _ = report_markdown(runs, ORACLE, plan)
    acts = action_summary(runs[ORACLE], catalogue.describe)
    noop = catalogue.noop_index
    changes = [s.action for r in runs[ORACLE] for s in r.steps[1:]
               if s.action is not None and s.action != noop]
    lines = [f"The oracle chose among the `{args.catalogue}` catalogue's {len(catalogue)} "
             f"actions at every step: each configuration one action away on "
             f"{args.screen_seeds} look-ahead seed(s), the best {args.top_k} and no change again "
             f"on {args.confirm_seeds} other seeds, a change only if it beat no change there by "
             f"more than {args.min_gain:g} points ({stats['evaluated']['candidates']} "
             "measurements).", "",
             *md, "",
             f"The oracle's actions: {acts['distinct']} distinct in {acts['steps']} steps; "
             f"{len(changes)} steps changed the configuration, {len(set(changes))} distinct "
             f"changes; most frequent: {acts['most_frequent']} "
             f"({acts['share']:.0%})." if acts["steps"] else "The oracle took no action.", ""]
    g, h = stats["replay"], stats["replay_vs_throttle"]
    lines.append(f"Blind replay (the ablation's shuffle, applied to the oracle), against Istio's "
                 f"defaults: the oracle's mean gain {g['gain']:+.1f} summed points, the "
                 f"replay's {g['shuffled_gain']:+.1f}: the replay loses {g['share_lost']:.0%} "
                 "of the gain." if g["gain"] > 0 else
                 f"Against Istio's defaults the oracle has no gain ({g['gain']:+.1f}): no "
                 "share of it for the replay to lose.")
    lines.append(f"Against the gateway throttle: the oracle {h['gain']:+.1f} summed points, "
                 f"the replay {h['shuffled_gain']:+.1f}.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, append to BENCHMARKS.md."""
    from envs.backends.base import BackendError
    from rl.evaluation.benchmarks_md import append_or_report, recorded_command

    args = parse_args(argv)
    t0 = time.monotonic()
    try:
        runs, plan, stats = run(args)
    except BackendError as exc:
        print(f"headroom: {exc}", file=sys.stderr)
        return 2
    text = markdown(args, runs, plan, stats)
    print(text)
    if not args.no_write:
        command = recorded_command("scripts/headroom.py",
                                   sys.argv[1:] if argv is None else argv)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        entry = (f"### {stamp} — how much the held-out cases reward reacting: "
                 f"`{command.strip()}` ({time.monotonic() - t0:.0f} s)\n\n{text}")
        if not append_or_report(BENCHMARKS_MD, SECTION, INTRO, entry, "headroom"):
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
