"""Does the sim-trained policy transfer? Closed-loop held-out scenarios on the simulator and
on real Envoy (default), or the earlier classic one-episode check (``--classic``).

    python experiments/transfer.py                         # best trial of results/pg_sweep
    python experiments/transfer.py --sweep-results results/pg_sweep/results.json
    python experiments/transfer.py --quick                 # 1 case, 3 steps, policy + Istio
    python experiments/transfer.py --classic [--seed S --measure-runs N --cases N]

**Default: closed loop** (:mod:`rl.evaluation.transfer_closed_loop`). The policy (greedy; the best
trial of ``--sweep-results``, or ``--checkpoint``), Istio's defaults, the TPE-201 static
configuration, the tuned rule-based controller, the gateway throttle and Envoy's adaptive
concurrency filter each play the first ``--cases`` held-out cases
(``rl.evaluation.scenario_eval.held_out_plan``; default 6: a load step up, a step down, a diurnal
curve, carts down, carts slowed ×5.5, a step down with shipping slowed — so at least one fault and
one load step) for ``--episode-len`` steps (default 6: the cases are generated with the held-out
minimum of 8 steps and their first 6 played, by which every load step and fault has started) of
``--step-s`` seconds of offered load (default 4), with the same case seeds (load seeds) on the
simulator and on the local mesh (replica ``--replica``, default 21: every episode on a freshly
started replica, the methods interleaved case by case in a rotating order). Adaptive
concurrency runs on local only: the simulator refuses it (its cells say "n/a (local only)" with
the simulator's reason).

Run length: a local run costs ~12 s at ``--step-s 4`` (the load, then the settling and Prometheus
reads around it: 11 runs took 116-144 s on 2 cores shared with a training job), so the default's 6
methods × 6 cases × 7 runs take ~50 min on local (49 min on 2026-12-03 at load average 5-10 from
other jobs; more than the 30-40 min aimed at: 8 steps would take ~65 min) and about a second on the
simulator (plus its compilation on a fresh machine). The episodes are shorter than the policy's
training episodes (20 steps of 10 s): the observation's progress channel runs over 6 steps, and the
report says what the checkpoint was trained with.

Targets (issue 13): the policy keeps >= 60 % of its simulator gain over Istio's defaults on real
Envoy (summed over cases, and per case; undefined — and said so — when the simulator gain is
about 0), and beats adaptive concurrency in >= 2/3 of the cases on local. Writes
``results.json``, ``results.md`` and ``traces.png`` (per-step score of every method, every case,
both backends) into ``--output`` (default ``results/transfer``) and appends the tables, with the
command and date, to the ``## Transfer`` section of ``BENCHMARKS.md`` (``--no-append`` to skip).

**``--classic``** (:mod:`rl.evaluation.transfer`): ONE greedy episode on the simulator and on
the local mesh (default replica 5) from held-out seed ``--seed`` under the checkpoint's training
env config (the notebook's closed-loop users), initial and final configuration re-measured
``--measure-runs`` times; then for ``--cases`` more held-out seeds (default 6, from 1 000 010)
the simulator episode's start and end configuration measured on both backends.

Errors the user can fix (a missing checkpoint, an unwritable output or ``--benchmarks`` file,
found by writing there before the first case, a replica already up, flags of the other mode)
are one line on stderr and exit status 2; so is a ``--benchmarks`` file that can no longer be
written when the tables are appended (printed, and the results files written, before).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rl.evaluation.checkpoint import DEFAULT_SWEEP_RESULTS, CheckpointError
from rl.evaluation.scenario_eval import SCENARIO_SEED
from rl.evaluation.transfer import (
    CASES_FIRST_SEED,
    DEFAULT_MEASURE_RUNS,
    NotAppendedError,
    TransferError,
    TransferSettings,
    run_transfer,
)
from rl.evaluation.transfer import DEFAULT_CASES as CLASSIC_CASES
from rl.evaluation.transfer import DEFAULT_REPLICA as CLASSIC_REPLICA
from rl.evaluation.transfer import DEFAULT_SEED as CLASSIC_SEED
from rl.evaluation.transfer_closed_loop import (
    DEFAULT_CASES,
    DEFAULT_EPISODE_LEN,
    DEFAULT_OUTPUT,
    DEFAULT_REPLICA,
    DEFAULT_STEP_S,
    QUICK_CASES,
    QUICK_EPISODE_LEN,
    ClosedLoopSettings,
    run_closed_loop,
)

REPO = Path(__file__).resolve().parents[1]


#: Flags of one mode only (the other mode rejects them).
CLASSIC_ONLY = ("seed", "measure_runs")
CLOSED_LOOP_ONLY = ("quick", "step_s", "output", "scenario_seed")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line flags (module doc), with the defaults of the chosen mode filled in."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classic", action="store_true",
                   help="the earlier one-episode check under the notebook's closed-loop users")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_CASES} case, {QUICK_EPISODE_LEN} steps, policy and Istio's "
                        "defaults only (a few minutes; CI)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="REINFORCE Algorithm checkpoint (default: best trial of "
                        "--sweep-results)")
    p.add_argument("--sweep-results", type=Path, default=DEFAULT_SWEEP_RESULTS)
    p.add_argument("--cases", type=int, default=None,
                   help=f"held-out cases (default {DEFAULT_CASES}, quick {QUICK_CASES}; "
                        f"--classic: cases compared configuration by configuration, default "
                        f"{CLASSIC_CASES}, seeds from {CASES_FIRST_SEED}, 0: none)")
    p.add_argument("--episode-len", type=int, default=None,
                   help=f"steps per case (default {DEFAULT_EPISODE_LEN}, quick "
                        f"{QUICK_EPISODE_LEN}; --classic: the checkpoint's, 20 if unset)")
    p.add_argument("--step-s", type=float, default=None,
                   help=f"seconds of offered load per run (default {DEFAULT_STEP_S:g})")
    p.add_argument("--replica", type=int, default=None,
                   help=f"local mesh replica (ports 21000 + 200·K; default {DEFAULT_REPLICA}, "
                        f"--classic {CLASSIC_REPLICA})")
    p.add_argument("--output", type=Path, default=None,
                   help=f"results.json, results.md, traces.png (default {DEFAULT_OUTPUT})")
    p.add_argument("--scenario-seed", type=int, default=None,
                   help=f"seed of the held-out scenarios (default {SCENARIO_SEED})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"--classic: reset seed of the episode (default {CLASSIC_SEED})")
    p.add_argument("--measure-runs", type=int, default=None,
                   help="--classic: fresh load runs scoring the initial and the final "
                        f"configuration on each backend (default {DEFAULT_MEASURE_RUNS}; 0: "
                        "the episode's own single runs)")
    p.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    other = CLOSED_LOOP_ONLY if args.classic else CLASSIC_ONLY
    given = [f"--{n.replace('_', '-')}" for n in other if getattr(args, n) not in (None, False)]
    if given:
        p.error(f"{', '.join(given)} "
                + ("only appl" + ("ies" if len(given) == 1 else "y"))
                + (" without --classic" if args.classic else " with --classic"))
    if args.episode_len is not None and args.episode_len < 1:
        p.error(f"--episode-len must be >= 1, got {args.episode_len}")
    if args.replica is not None and args.replica < 0:
        p.error(f"--replica must be >= 0, got {args.replica}")
    if args.classic:
        defaults = {"cases": CLASSIC_CASES, "replica": CLASSIC_REPLICA, "seed": CLASSIC_SEED,
                    "measure_runs": DEFAULT_MEASURE_RUNS}
    else:
        defaults = {"cases": QUICK_CASES if args.quick else DEFAULT_CASES,
                    "episode_len": QUICK_EPISODE_LEN if args.quick else DEFAULT_EPISODE_LEN,
                    "step_s": DEFAULT_STEP_S, "replica": DEFAULT_REPLICA,
                    "output": DEFAULT_OUTPUT, "scenario_seed": SCENARIO_SEED}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.classic:
        if args.measure_runs < 0:
            p.error(f"--measure-runs must be >= 0, got {args.measure_runs}")
        if args.cases < 0:
            p.error(f"--cases must be >= 0, got {args.cases}")
        if args.cases and args.measure_runs < 1:
            p.error("--cases needs --measure-runs >= 1 (each configuration is measured afresh)")
    else:
        if args.cases < 1:
            p.error(f"--cases must be >= 1, got {args.cases}")
        if not args.step_s > 0:
            p.error(f"--step-s must be > 0, got {args.step_s}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a user-fixable problem)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = ("python experiments/transfer.py " + " ".join(shlex.quote(a) for a in argv)).strip()
    args = vars(parse_args(argv))
    try:
        if args.pop("classic"):
            for key in CLOSED_LOOP_ONLY:
                args.pop(key)
            run_transfer(TransferSettings(**args), command)
        else:
            for key in CLASSIC_ONLY:
                args.pop(key)
            run_closed_loop(ClosedLoopSettings(**args),
                            command, log=lambda line: print(line, flush=True))
    except NotAppendedError:
        return 2  # its one line is on stderr already, after the tables
    except (TransferError, CheckpointError) as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
